"""Models that can be cut between any two blocks.

Every model is an ``nn.Sequential`` of named blocks (torchvision's building blocks inside),
so the edge part is a prefix and the server part the rest, sharing the same modules.
The registry (registry.MODELS) names each model's module and builder; a model's module (and whatever it
imports: torchvision for most, not for small_cnn) is imported only when it is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import MODELS as REGISTRY, ModelInfo  # declared once, in registry.py

if TYPE_CHECKING:
    from torch import nn


def build_model(name: str, num_classes: int = 10, input_shape: tuple[int, int, int] | None = None) -> nn.Sequential:
    try:
        info = REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(REGISTRY)}") from None
    c, h, w = input_shape or info.default_input
    if min(h, w) < info.min_size:
        raise ValueError(f"model {name} needs inputs of at least {info.min_size}x{info.min_size}, got {h}x{w}")
    return info.build(num_classes=num_classes, in_channels=c, image_size=h)


def split(model: nn.Sequential, after: int) -> tuple[nn.Sequential, nn.Sequential]:
    """The edge part (first ``after`` blocks) and the server part (the rest)."""
    n = len(model)
    if not 1 <= after < n:
        raise ValueError(f"split after {after}: the model has {n} blocks, so 1..{n - 1} are valid cuts")
    return model[:after], model[after:]


__all__ = ["REGISTRY", "ModelInfo", "build_model", "split"]
