"""The wire protocol (header frame + raw tensor frames) and ZeroMQ endpoints that count bytes."""

from .endpoint import Endpoint, PeerGone, PeerTimeout, Security, bound_socket, user_id
from .keys import KEYS_ENV, Keyring, KeysMissing, keys_dir_for, load_keyring, make_keys, secret_data
from .wire import Kind, Message, Traffic, WireError, decode, encode, wire_bytes

__all__ = [
    "Endpoint",
    "PeerGone",
    "PeerTimeout",
    "Security",
    "bound_socket",
    "user_id",
    "KEYS_ENV",
    "Keyring",
    "KeysMissing",
    "keys_dir_for",
    "load_keyring",
    "make_keys",
    "secret_data",
    "Kind",
    "Message",
    "Traffic",
    "WireError",
    "decode",
    "encode",
    "wire_bytes",
]
