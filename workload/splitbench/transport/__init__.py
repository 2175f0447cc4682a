"""The wire protocol (header frame + raw tensor frames) and ZeroMQ endpoints that count bytes."""
from .endpoint import Endpoint, PeerTimeout
from .wire import Kind, Message, Traffic, WireError, decode, encode, wire_bytes

__all__ = ["Endpoint", "PeerTimeout", "Kind", "Message", "Traffic", "WireError", "decode", "encode", "wire_bytes"]
