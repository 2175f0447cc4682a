"""CurveZMQ keys of one experiment: one keypair per role instance, made by the executor.

Layout of a keys folder (local: <run-dir>/keys, mode 0700; Kubernetes: the Experiment's
Secret mounted read-only), one file per key, names valid as Secret keys:
    <instance>.pub   the z85 public key (40 characters)
    <instance>.key   the z85 secret key (only the instance's own is needed in its pod)
A role finds the folder from `--keys DIR`, else $SPLITBENCH_KEYS, else <run-dir>/keys.

Keys are never written into the record, logs, spec.yaml or report: only this folder holds them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import zmq

KEYS_ENV = "SPLITBENCH_KEYS"
# What CURVE adds to every frame on the wire (libzmq 4.3, CurveZMQ MESSAGE command):
# "\x07MESSAGE" (8) + short nonce (8) + Poly1305 MAC (16) + flags byte (1).
CURVE_FRAME_OVERHEAD = 33


class KeysMissing(RuntimeError):
    """The keys folder or a key in it is missing or unreadable; str() is one line."""


@dataclass
class Keyring:
    """What one role needs: its own keypair and the public keys of its experiment's roles."""

    instance: str
    public: bytes
    secret: bytes
    publics: dict[str, bytes] = field(default_factory=dict)  # instance -> public key (z85)

    def owner(self, public_z85: bytes) -> str | None:
        """The instance a client's public key belongs to, or None for a stranger."""
        for inst, key in self.publics.items():
            if key == public_z85:
                return inst
        return None

    def public_of(self, instance: str) -> bytes:
        try:
            return self.publics[instance]
        except KeyError:
            raise KeysMissing(f"no public key for {instance} in the keys folder") from None


def secret_data(instances: list[str]) -> dict[str, str]:
    """A fresh keypair per instance as {filename: z85 text}: the keys folder's content, also
    the stringData of the Kubernetes Secret (operator/security.py)."""
    out: dict[str, str] = {}
    for inst in instances:
        public, secret = zmq.curve_keypair()
        out[f"{inst}.pub"] = public.decode()
        out[f"{inst}.key"] = secret.decode()
    return out


def make_keys(keys_dir: Path, instances: list[str]) -> Path:
    """Write a fresh keypair per instance under keys_dir (folder 0700, files 0600)."""
    keys_dir = Path(keys_dir)
    keys_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(keys_dir, 0o700)
    for name, text in secret_data(instances).items():
        path = keys_dir / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(path, 0o600)
    return keys_dir


def keys_dir_for(args, run_dir: Path) -> Path:
    """Where a role's keys are: --keys, else $SPLITBENCH_KEYS, else <run-dir>/keys."""
    given = getattr(args, "keys", None) or os.environ.get(KEYS_ENV)
    return Path(given) if given else Path(run_dir) / "keys"


def load_keyring(keys_dir: Path, instance: str) -> Keyring:
    keys_dir = Path(keys_dir)
    if not keys_dir.is_dir():
        raise KeysMissing(
            f"no keys folder at {keys_dir} (transport.auth is curve: the executor makes one; "
            f"or pass --keys DIR / set {KEYS_ENV})"
        )
    publics = {}
    for path in sorted(keys_dir.glob("*.pub")):
        key = path.read_bytes().strip()
        if len(key) != 40:
            raise KeysMissing(f"{path.name} is not a z85 CURVE public key (40 characters)")
        publics[path.name[:-4]] = key
    secret_path = keys_dir / f"{instance}.key"
    if instance not in publics or not secret_path.exists():
        raise KeysMissing(f"no keypair for {instance} in {keys_dir}")
    secret = secret_path.read_bytes().strip()
    if len(secret) != 40 or zmq.curve_public(secret) != publics[instance]:
        raise KeysMissing(f"{instance}.key in {keys_dir} does not match {instance}.pub")
    return Keyring(instance, publics[instance], secret, publics)


def curve_wire_bytes(frame_lengths) -> int:
    """Bytes a message of these frame lengths takes on a CURVE connection: each frame goes
    as a MESSAGE command (its payload plus CURVE_FRAME_OVERHEAD) with ZMTP's 2- or 9-byte
    command header."""
    total = 0
    for n in frame_lengths:
        body = n + CURVE_FRAME_OVERHEAD
        total += body + (2 if body < 256 else 9)
    return total
