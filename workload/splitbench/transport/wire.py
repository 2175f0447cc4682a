"""Wire format of one message: frame 0 is a small versioned binary header, frames 1..n are
the raw bytes of n tensors, sent without copying. No pickle: a peer's bytes are only ever
interpreted as the dtypes and shapes the header declares, after checking them.

Header (little-endian):
    magic "SB" | version u8 | kind u8 | epoch u32 | step u64 | n_tensors u16
    | sender_len u8 | experiment id (16 bytes) | sender
    then per tensor: name_len u8 | dtype u8 | traffic u8 | ndim u8 | nbytes u64 | name | dims u32 x ndim

Fixed widths make the byte count of a message a function of the spec alone, so bytes per
sample is deterministic and can be regressed in CI. The experiment travels as a 16-byte id
(the first 16 bytes of SHA-256 of its name), so renaming an experiment does not change its
bytes; a decoded message's `experiment` is that id in hex.
"""
from __future__ import annotations

import functools
import hashlib
import math
import struct
import warnings
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    import torch

# Received frames are read-only and we never write into them; torch warns on every such
# view, which would cost more than the view itself on the hot path.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
warnings.filterwarnings("ignore", message="The given buffer is not writable")

MAGIC = b"SB"
VERSION = 2  # 2: fixed-size experiment id instead of the name
MAX_TENSORS = 64
MAX_NDIM = 8
MAX_TENSOR_BYTES = 1 << 32

_FIXED = struct.Struct("<2sBBIQHB16s")
ID_BYTES = 16


def peek_kind(header) -> int:
    """A header's kind byte without parsing the rest (the relay needs only that), or -1 for
    one shorter than the fixed part."""
    return header[3] if len(header) >= _FIXED.size else -1


def experiment_id(experiment: str) -> bytes:
    """The header's 16-byte experiment id: a decoded id (32 hex digits) as is, a name hashed."""
    if len(experiment) == 2 * ID_BYTES:
        try:
            return bytes.fromhex(experiment)
        except ValueError:
            pass
    return hashlib.sha256(experiment.encode("utf-8")).digest()[:ID_BYTES]
_TENSOR = struct.Struct("<BBBBQ")


class Kind(IntEnum):
    HELLO = 1        # source -> server: I am here, with my sample count
    WELCOME = 2      # server -> source
    TRAIN = 3        # one training step's payload
    TRAIN_REPLY = 4  # gradient and/or step statistics
    EVAL = 5         # held-out samples for accuracy (accounted apart from training)
    EVAL_REPLY = 6
    BYE = 7
    ERROR = 8        # the peer sent something we could not use; text in tensor "error"


class Traffic(IntEnum):
    """What the bytes are, for accounting (DESIGN.md's kinds, plus eval)."""
    INPUT = 0
    ACTIVATION = 1
    GRADIENT = 2
    LABEL = 3
    WEIGHTS = 4
    CONTROL = 5
    EVAL = 6

    @property
    def label(self) -> str:
        return self.name.lower()


# The header's dtype codes, by name: torch is imported only where tensors are made or sent,
# so the link emulator, which checks headers and forwards frames, runs without it.
_DTYPE_NAMES = ("float32", "float64", "float16", "bfloat16", "uint8", "int8", "int16", "int32", "int64", "bool")
# numpy twins for the zero-copy paths (bfloat16 has none and takes a slower torch path)
_NUMPY = [np.dtype(n) if n != "bfloat16" else None for n in _DTYPE_NAMES]
_ITEMSIZE = [d.itemsize if d is not None else 2 for d in _NUMPY]
_NUMPY_CODE = {d: i for i, d in enumerate(_NUMPY) if d is not None}


@functools.cache
def _torch_dtypes() -> tuple[list, dict]:
    """torch's dtypes by code, and code by dtype (torch imported on first use)."""
    import torch

    dtypes = [getattr(torch, n) for n in _DTYPE_NAMES]
    return dtypes, {d: i for i, d in enumerate(dtypes)}
# Lookups instead of Enum(...) calls: this runs for every message, both ways.
_KINDS = {int(k): k for k in Kind}
_TRAFFICS = {int(t): t for t in Traffic}


class WireError(ValueError):
    """A message that does not follow the protocol."""


@dataclass
class Message:
    kind: Kind
    experiment: str = ""
    sender: str = ""
    epoch: int = 0
    step: int = 0
    # torch tensors; an outgoing message may also hold numpy arrays (sent by roles without torch)
    tensors: dict[str, torch.Tensor | np.ndarray] = field(default_factory=dict)  # numpy: sent by the relay
    traffic: dict[str, Traffic] = field(default_factory=dict)  # per tensor; default CONTROL

    def add(self, name: str, tensor: torch.Tensor | np.ndarray, traffic: Traffic) -> "Message":
        self.tensors[name] = tensor
        self.traffic[name] = traffic
        return self

    def error_text(self) -> str:
        t = self.tensors.get("error")
        return np.asarray(t).tobytes().decode("utf-8", "replace") if t is not None else ""


def error_message(text: str, experiment: str = "", sender: str = "") -> Message:
    data = np.frombuffer(text.encode("utf-8")[:4096] or b"?", dtype=np.uint8)  # no torch: the relay sends these
    return Message(Kind.ERROR, experiment, sender).add("error", data, Traffic.CONTROL)


def _short(text: str, what: str) -> bytes:
    b = text.encode("utf-8")
    if len(b) > 255:
        raise WireError(f"{what} longer than 255 bytes")
    return b


def encode(msg: Message) -> list:
    """Frames ready for ``send_multipart(copy=False)``: the header and one buffer per tensor."""
    if len(msg.tensors) > MAX_TENSORS:
        raise WireError(f"{len(msg.tensors)} tensors, at most {MAX_TENSORS}")
    snd = _short(msg.sender, "sender")
    parts = [_FIXED.pack(MAGIC, VERSION, int(msg.kind), msg.epoch, msg.step, len(msg.tensors), len(snd),
                         experiment_id(msg.experiment)), snd]
    buffers: list[bytes | memoryview] = []
    for name, t in msg.tensors.items():
        nb = _short(name, "tensor name")
        if isinstance(t, np.ndarray):
            code, t = _NUMPY_CODE.get(t.dtype), np.ascontiguousarray(t)
            if code is None:
                raise WireError(f"tensor {name}: dtype {t.dtype} is not supported on the wire")
            if t.ndim > MAX_NDIM:
                raise WireError(f"tensor {name}: {t.ndim} dimensions, at most {MAX_NDIM}")
            parts.append(_TENSOR.pack(len(nb), code, int(msg.traffic.get(name, Traffic.CONTROL)), t.ndim, t.nbytes))
            parts += [nb, struct.pack(f"<{t.ndim}I", *t.shape)]
            buffers.append(t.data.cast("B") if t.nbytes else b"")
            continue
        # Few torch calls per tensor: after a large transfer they run with cold caches.
        if t.requires_grad:
            t = t.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        if not t.is_contiguous():
            t = t.contiguous()
        code = _torch_dtypes()[1].get(t.dtype)
        if code is None:
            raise WireError(f"tensor {name}: dtype {t.dtype} is not supported on the wire")
        shape = t.shape
        if len(shape) > MAX_NDIM:
            raise WireError(f"tensor {name}: {len(shape)} dimensions, at most {MAX_NDIM}")
        nbytes = t.numel() * _ITEMSIZE[code]
        parts.append(_TENSOR.pack(len(nb), code, int(msg.traffic.get(name, Traffic.CONTROL)), len(shape), nbytes))
        parts.append(nb)
        parts.append(struct.pack(f"<{len(shape)}I", *shape))
        if not nbytes:
            buffers.append(b"")
        elif _NUMPY[code] is not None:
            buffers.append(t.numpy().data.cast("B"))
        else:
            buffers.append(t.reshape(-1).view(_torch_dtypes()[0][4]).numpy().data)  # as uint8
    return [b"".join(parts), *buffers]


def decode(frames: Sequence, tensors: bool = True) -> Message:
    """Parse and check a received message; raise WireError naming what is wrong. With
    tensors=False every check still runs but no tensor is made (and torch is not needed):
    the message carries its tensors' names and traffic kinds only."""
    if not frames:
        raise WireError("empty message")
    header = memoryview(_frame_bytes(frames[0]))
    if len(header) < _FIXED.size:
        raise WireError(f"header is {len(header)} bytes, shorter than the fixed {_FIXED.size}")
    magic, version, kind, epoch, step, n, slen, exp_id = _FIXED.unpack_from(header, 0)
    if magic != MAGIC:
        raise WireError(f"bad magic {bytes(magic)!r}: not a splitbench message")
    if version != VERSION:
        raise WireError(f"protocol version {version}, this peer speaks {VERSION}")
    if kind not in _KINDS:
        raise WireError(f"unknown message kind {kind}")
    kind = _KINDS[kind]
    if n > MAX_TENSORS:
        raise WireError(f"{n} tensors declared, at most {MAX_TENSORS}")
    if len(frames) != 1 + n:
        raise WireError(f"header declares {n} tensors but {len(frames) - 1} data frames arrived")
    pos = _FIXED.size
    snd, pos = _text(header, pos, slen, "sender")
    msg = Message(kind, exp_id.hex(), snd, epoch, step)
    for i in range(n):
        if pos + _TENSOR.size > len(header):
            raise WireError(f"header truncated in tensor {i}'s descriptor")
        nlen, code, traffic, ndim, nbytes = _TENSOR.unpack_from(header, pos)
        pos += _TENSOR.size
        name, pos = _text(header, pos, nlen, f"tensor {i} name")
        if code >= len(_DTYPE_NAMES):
            raise WireError(f"tensor {name}: unknown dtype code {code}")
        if ndim > MAX_NDIM:
            raise WireError(f"tensor {name}: {ndim} dimensions, at most {MAX_NDIM}")
        if traffic not in _TRAFFICS:
            raise WireError(f"tensor {name}: unknown traffic kind {traffic}")
        traffic = _TRAFFICS[traffic]
        if pos + 4 * ndim > len(header):
            raise WireError(f"header truncated in tensor {name}'s shape")
        shape = struct.unpack_from(f"<{ndim}I", header, pos)
        pos += 4 * ndim
        itemsize = _ITEMSIZE[code]
        if nbytes > MAX_TENSOR_BYTES or math.prod(shape) * itemsize != nbytes:
            raise WireError(f"tensor {name}: shape {list(shape)} of torch.{_DTYPE_NAMES[code]} is not {nbytes} bytes")
        buf = _frame_bytes(frames[1 + i])
        if len(buf) != nbytes:
            raise WireError(f"tensor {name}: header says {nbytes} bytes, frame has {len(buf)}")
        if name in msg.traffic:
            raise WireError(f"tensor {name} appears twice")
        if tensors:
            msg.tensors[name] = _as_tensor(buf, code, shape)
        msg.traffic[name] = traffic
    if pos != len(header):
        raise WireError(f"header has {len(header) - pos} unexpected trailing bytes")
    return msg


def _text(header: memoryview, pos: int, length: int, what: str) -> tuple[str, int]:
    if pos + length > len(header):
        raise WireError(f"header truncated in {what}")
    try:
        return bytes(header[pos:pos + length]).decode("utf-8"), pos + length
    except UnicodeDecodeError:
        raise WireError(f"{what} is not UTF-8") from None


def _frame_bytes(frame) -> memoryview | bytes:
    # zmq.Frame (copy=False) exposes .buffer; bytes and memoryviews pass through.
    return frame.buffer if hasattr(frame, "buffer") else frame


def _as_tensor(buf, code: int, shape: tuple[int, ...]) -> torch.Tensor:
    import torch

    dtype = _torch_dtypes()[0][code]
    if len(buf) == 0:
        return torch.empty(shape, dtype=dtype)
    if _NUMPY[code] is not None:
        return torch.from_numpy(np.frombuffer(buf, dtype=_NUMPY[code]).reshape(shape))
    return torch.frombuffer(buf, dtype=torch.uint8).view(dtype).reshape(shape)


def frame_len(frame) -> int:
    """Bytes in a frame: zmq.Frame, bytes, or a memoryview of any format."""
    return frame.nbytes if isinstance(frame, memoryview) else len(frame)


def zmtp_overhead(length: int) -> int:
    """Bytes ZMTP 3 adds to one frame: a flags byte and a 1- or 8-byte length."""
    return 2 if length < 256 else 9


def wire_bytes(frames: Sequence, msg: Message) -> dict[Traffic, int]:
    """Bytes this message puts on the wire, by traffic kind. Header and framing are control;
    everything in an EVAL/EVAL_REPLY is eval."""
    lengths = [frame_len(f) for f in frames]
    out: dict[Traffic, int] = {}
    control = lengths[0] + sum(zmtp_overhead(n) for n in lengths)
    evaluation = msg.kind in (Kind.EVAL, Kind.EVAL_REPLY)
    for (name, _), n in zip(msg.tensors.items(), lengths[1:]):
        t = Traffic.EVAL if evaluation else msg.traffic.get(name, Traffic.CONTROL)
        out[t] = out.get(t, 0) + n
    key = Traffic.EVAL if evaluation else Traffic.CONTROL
    out[key] = out.get(key, 0) + control
    return out
