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
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:
    import torch

# Tensors made from buffers numpy sees as read-only (bytes, some memoryviews) make torch warn
# on every such view, which would cost more than the view itself on the hot path; we never
# write into a received frame.
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


@functools.lru_cache(maxsize=64)  # per message: hashed once per experiment, not per send
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
    HELLO = 1  # source -> server: I am here, with my sample count
    WELCOME = 2  # server -> source
    TRAIN = 3  # one training step's payload
    TRAIN_REPLY = 4  # gradient and/or step statistics
    EVAL = 5  # held-out samples for accuracy (accounted apart from training)
    EVAL_REPLY = 6
    BYE = 7
    ERROR = 8  # the peer sent something we could not use; text in tensor "error"


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


class Layout:
    """What one header says, checked: the message's kind, experiment and sender, per tensor
    its name, dtype code, traffic kind, shape and size, its frames' lengths and the bytes it
    puts on the wire by traffic kind. All of it but the epoch and step is the same for every
    message of one step's shape, so layouts are kept by the header's other bytes: a header
    seen before is not parsed and checked again (its checks depend on those bytes alone)."""

    __slots__ = ("kind", "experiment", "sender", "tensors", "traffic", "lengths", "counts", "transport")

    def __init__(self, kind: Kind, experiment: str, sender: str, tensors: tuple, header_len: int):
        self.kind, self.experiment, self.sender = kind, experiment, sender
        self.tensors = tensors  # ((name, dtype code, traffic, shape, nbytes), ...)
        self.traffic = {name: traffic for name, _, traffic, _, _ in tensors}
        self.lengths = (header_len, *(spec[4] for spec in tensors))
        # bytes by traffic kind, shared by every message of this layout: read-only
        self.counts = MappingProxyType(_counts(kind, self.lengths, [spec[2] for spec in tensors]))
        self.transport: tuple[int, int] | None = None  # the endpoint's memo: (plain, CURVE) bytes with framing


# Layouts by header bytes minus the epoch (bytes 4..8) and step (8..16). Bounded: a peer that
# sends ever new headers only empties it, and each of its headers is checked in full.
_LAYOUTS: dict[bytes, Layout] = {}
_LAYOUTS_MAX = 256
_EPOCH_STEP = struct.Struct("<IQ")
_SHAPES = [struct.Struct(f"<{n}I") for n in range(MAX_NDIM + 1)]
_AS_BYTES: dict[str, bytes] = {}  # tensor names and senders, encoded (a handful per run)


def _remember(key: bytes, layout: Layout) -> Layout:
    if len(_LAYOUTS) >= _LAYOUTS_MAX:
        _LAYOUTS.clear()
    _LAYOUTS[key] = layout
    return layout


def _short(text: str, what: str) -> bytes:
    b = _AS_BYTES.get(text)
    if b is None:
        b = text.encode("utf-8")
        if len(b) > 255:
            raise WireError(f"{what} longer than 255 bytes")
        if len(_AS_BYTES) < 1024:
            _AS_BYTES[text] = b
    return b


def encode(msg: Message) -> list:
    """Frames ready for ``send_multipart(copy=False)``: the header and one buffer per tensor."""
    return encode_layout(msg)[0]


def encode_layout(msg: Message) -> tuple[list, Layout]:
    """encode(), and the message's Layout (its byte counts). Each tensor frame is the tensor's
    own memory (a contiguous CPU tensor: no copy). The header is built and checked once per
    signature (kind, experiment, sender, and each tensor's name, dtype, shape and traffic);
    a message of a signature seen before costs a pack of its epoch and step and a join."""
    tensors: dict[str, Any] = msg.tensors  # torch here; a numpy array raises AttributeError below
    traffic = msg.traffic
    sig: tuple = (msg.kind, msg.experiment, msg.sender)
    frames: list = [b""]
    try:
        for name, t in tensors.items():
            if t.requires_grad:
                t = t.detach()
            if not t.is_contiguous():
                t = t.contiguous()
            a = t.numpy()  # CPU tensors of numpy's dtypes; others (bfloat16, GPU) take the general path
            sig += (name, a.dtype, a.shape, traffic.get(name, Traffic.CONTROL))
            frames.append(a)
    except (AttributeError, TypeError, RuntimeError):  # AttributeError: a numpy array (roles without torch)
        return _encode_general(msg)
    known = _SIGNATURES.get(sig)
    if known is None:
        general, layout = _encode_general(msg)
        header = general[0]
        if len(_SIGNATURES) >= _LAYOUTS_MAX:
            _SIGNATURES.clear()
        known = _SIGNATURES[sig] = (header[:4], header[16:], layout)
    head, tail, layout = known
    frames[0] = head + _EPOCH_STEP.pack(msg.epoch, msg.step) + tail
    return frames, layout


_SIGNATURES: dict[tuple, tuple[bytes, bytes, Layout]] = {}


def _encode_general(msg: Message) -> tuple[list, Layout]:
    """Any message: numpy arrays, torch tensors of any supported dtype and device; every
    limit checked. The header is encoded once, in one join."""
    tensors = msg.tensors
    if len(tensors) > MAX_TENSORS:
        raise WireError(f"{len(tensors)} tensors, at most {MAX_TENSORS}")
    snd = _short(msg.sender, "sender")
    parts = [
        _FIXED.pack(
            MAGIC, VERSION, msg.kind, msg.epoch, msg.step, len(tensors), len(snd), experiment_id(msg.experiment)
        ),
        snd,
    ]
    frames: list = [b""]
    traffic = msg.traffic
    for name, t in tensors.items():
        nb = _short(name, "tensor name")
        if isinstance(t, np.ndarray):
            code, t = _NUMPY_CODE.get(t.dtype), np.ascontiguousarray(t)
            if code is None:
                raise WireError(f"tensor {name}: dtype {t.dtype} is not supported on the wire")
            shape, nbytes = t.shape, t.nbytes
            buf = t.data.cast("B") if nbytes else b""
        else:
            if t.requires_grad:
                t = t.detach()
            if not t.is_cpu:
                t = t.cpu()
            if not t.is_contiguous():
                t = t.contiguous()
            code = _torch_dtypes()[1].get(t.dtype)
            if code is None:
                raise WireError(f"tensor {name}: dtype {t.dtype} is not supported on the wire")
            shape = t.shape
            if _NUMPY[code] is not None:
                buf = t.numpy()  # the tensor's memory, shared: a buffer for zmq as it is
                nbytes = buf.nbytes
            else:  # bfloat16 (no numpy twin): its bytes as uint8
                nbytes = t.numel() * 2
                buf = t.reshape(-1).view(_torch_dtypes()[0][4]).numpy()
            if not nbytes:
                buf = b""
        ndim = len(shape)
        if ndim > MAX_NDIM:
            raise WireError(f"tensor {name}: {ndim} dimensions, at most {MAX_NDIM}")
        parts += (
            _TENSOR.pack(len(nb), code, traffic.get(name, Traffic.CONTROL), ndim, nbytes),
            nb,
            _SHAPES[ndim].pack(*shape),
        )
        frames.append(buf)
    header = frames[0] = b"".join(parts)
    key = header[:4] + header[16:]
    layout = _LAYOUTS.get(key)
    if layout is None:
        layout = _remember(key, _parse(header, frames))
    return frames, layout


def decode(frames: Sequence, tensors: bool = True) -> Message:
    """Parse and check a received message; raise WireError naming what is wrong. With
    tensors=False every check still runs but no tensor is made (and torch is not needed):
    the message carries its tensors' names and traffic kinds only."""
    return decode_layout(frames, tensors)[0]


def decode_layout(frames: Sequence, tensors: bool = True) -> tuple[Message, Layout]:
    """decode(), and the message's Layout. A header seen before (but for its epoch and step)
    is not parsed again; what may differ between messages of one layout, the number and
    lengths of the frames, is checked every time. Tensors are views of the frames."""
    if not frames:
        raise WireError("empty message")
    header = _header_bytes(frames[0])
    key = header[:4] + header[16:]
    layout = _LAYOUTS.get(key)
    if layout is None or len(header) < _FIXED.size:
        layout = _remember(key, _parse(header, frames))  # every check, in the protocol's order
    elif len(frames) != len(layout.lengths):
        raise WireError(f"header declares {len(layout.tensors)} tensors but {len(frames) - 1} data frames arrived")
    epoch, step = _EPOCH_STEP.unpack_from(header, 4)
    msg = Message(layout.kind, layout.experiment, layout.sender, epoch, step, {}, dict(layout.traffic))
    out = msg.tensors
    i = 0
    for name, code, _, shape, nbytes in layout.tensors:
        i += 1
        frame = frames[i]  # a zmq.Frame is a buffer itself: viewed as it is, no memoryview made
        if frame_len(frame) != nbytes:
            raise WireError(f"tensor {name}: header says {nbytes} bytes, frame has {frame_len(frame)}")
        if tensors:  # torch imported with the first tensor made (roles without torch check only)
            dtype = _NUMPY[code]
            if dtype is not None and nbytes:  # a view of the frame, no copy
                out[name] = (_torch or _import_torch()).from_numpy(np.ndarray(shape, dtype, frame))
            else:
                out[name] = _as_tensor(_frame_bytes(frame), code, shape, nbytes)
    return msg, layout


_VIEWS = (memoryview, np.ndarray)
_torch = None


def _import_torch():
    global _torch
    import torch

    _torch = torch
    return torch


def _parse(raw: bytes, frames: Sequence) -> Layout:
    """Check a header, and that the frames are as many and as long as it says, in the
    protocol's order: a WireError names the first thing wrong."""
    header = memoryview(raw)
    if len(header) < _FIXED.size:
        raise WireError(f"header is {len(header)} bytes, shorter than the fixed {_FIXED.size}")
    magic, version, kind, _, _, n, slen, exp_id = _FIXED.unpack_from(header, 0)
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
    specs: list[tuple] = []
    names: set[str] = set()
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
        shape = _SHAPES[ndim].unpack_from(header, pos)
        pos += 4 * ndim
        itemsize = _ITEMSIZE[code]
        if nbytes > MAX_TENSOR_BYTES or math.prod(shape) * itemsize != nbytes:
            raise WireError(f"tensor {name}: shape {list(shape)} of torch.{_DTYPE_NAMES[code]} is not {nbytes} bytes")
        got = frame_len(_frame_bytes(frames[1 + i]))
        if got != nbytes:
            raise WireError(f"tensor {name}: header says {nbytes} bytes, frame has {got}")
        if name in names:
            raise WireError(f"tensor {name} appears twice")
        names.add(name)
        specs.append((name, code, traffic, shape, nbytes))
    if pos != len(header):
        raise WireError(f"header has {len(header) - pos} unexpected trailing bytes")
    return Layout(kind, exp_id.hex(), snd, tuple(specs), len(header))


def _text(header: memoryview, pos: int, length: int, what: str) -> tuple[str, int]:
    if pos + length > len(header):
        raise WireError(f"header truncated in {what}")
    try:
        return bytes(header[pos : pos + length]).decode("utf-8"), pos + length
    except UnicodeDecodeError:
        raise WireError(f"{what} is not UTF-8") from None


def _frame_bytes(frame):
    """A frame's data as a buffer: zmq.Frame (copy=False) exposes .buffer; bytes, memoryviews
    and arrays pass through."""
    return getattr(frame, "buffer", frame)


def _header_bytes(frame) -> bytes:
    """The header frame as bytes (it is small: a copy costs less than a view's bookkeeping)."""
    if type(frame) is bytes:
        return frame
    b = getattr(frame, "bytes", None)  # zmq.Frame
    return b if type(b) is bytes else bytes(frame)


def _as_tensor(buf, code: int, shape: tuple[int, ...], nbytes: int) -> torch.Tensor:
    import torch

    if not nbytes:
        return torch.empty(shape, dtype=_torch_dtypes()[0][code])
    if _NUMPY[code] is not None:
        return torch.from_numpy(np.ndarray(shape, _NUMPY[code], buf))  # a view of the frame
    return torch.frombuffer(buf, dtype=torch.uint8).view(_torch_dtypes()[0][code]).reshape(shape)


def frame_len(frame) -> int:
    """Bytes in a frame: zmq.Frame, bytes, or a memoryview or array of any format."""
    return frame.nbytes if isinstance(frame, _VIEWS) else len(frame)


def zmtp_overhead(length: int) -> int:
    """Bytes ZMTP 3 adds to one frame: a flags byte and a 1- or 8-byte length."""
    return 2 if length < 256 else 9


def _counts(kind: Kind, lengths: Sequence[int], traffics: Sequence[Traffic]) -> dict[Traffic, int]:
    """Bytes by traffic kind of a message with these frame lengths (header first) and tensor
    traffic kinds. Header and framing are control; everything in an EVAL/EVAL_REPLY is eval."""
    out: dict[Traffic, int] = {}
    control = lengths[0] + sum(zmtp_overhead(n) for n in lengths)
    evaluation = kind in (Kind.EVAL, Kind.EVAL_REPLY)
    for t, n in zip(traffics, lengths[1:]):
        t = Traffic.EVAL if evaluation else t
        out[t] = out.get(t, 0) + n
    key = Traffic.EVAL if evaluation else Traffic.CONTROL
    out[key] = out.get(key, 0) + control
    return out


def wire_bytes(frames: Sequence, msg: Message) -> dict[Traffic, int]:
    """Bytes this message puts on the wire, by traffic kind. Header and framing are control;
    everything in an EVAL/EVAL_REPLY is eval."""
    return _counts(
        msg.kind, [frame_len(f) for f in frames], [msg.traffic.get(name, Traffic.CONTROL) for name in msg.tensors]
    )
