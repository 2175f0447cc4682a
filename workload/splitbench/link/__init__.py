"""User-space link emulation: the same relay process under every executor, no kernel modules."""

from .medium import Medium, Transmission
from .profiles import LinkConfig, resolve_network

__all__ = ["LinkConfig", "Medium", "Transmission", "resolve_network"]
