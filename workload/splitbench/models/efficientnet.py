"""EfficientNet-B2 (torchvision) and the HFSL paper's EfficientNet-B2s (sec. 3.1, Table 1),
as sequences of named blocks: stem, every MBConv block (1a ... 7b), top, head.

MBConv-s [paper, eqs. 1-3 and Fig. 2]: each 1x1 point convolution of MBConv (expansion and
projection) becomes a "cheap" convolution: m = n/2 primary maps from a standard 1x1
convolution, then one depthwise kxk convolution per primary map for the other half, with
the primary maps kept by identity (s = 2). Fig. 2's example (8 maps from 4 primary ones)
fixes s = 2; the cheap kernel is 3x3 by default [ours: the paper allows 3 to 9]. The
depthwise kxk of Table 1 and the squeeze-and-excitation stay as in MBConv.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.models import efficientnet_b2 as tv_efficientnet_b2
from torchvision.ops import Conv2dNormActivation, SqueezeExcitation

# Table 1 (and torchvision's B2): (expand ratio, kernel, stride, out channels, layers)
B2_STAGES = [
    (1, 3, 1, 16, 2),
    (6, 3, 2, 24, 3),
    (6, 5, 2, 48, 3),
    (6, 3, 2, 88, 4),
    (6, 5, 1, 120, 4),
    (6, 5, 2, 208, 5),
    (6, 3, 1, 352, 2),
]
STEM, TOP = 32, 1408


class CheapConv(nn.Module):
    """n output maps for the price of n/2: a 1x1 convolution makes the primary maps, a
    depthwise convolution derives one more map from each, and both halves are kept."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, activation: type[nn.Module] | None = nn.SiLU):
        super().__init__()
        self.cout = cout
        m = (cout + 1) // 2
        self.primary = Conv2dNormActivation(cin, m, 1, activation_layer=activation)
        self.cheap = Conv2dNormActivation(m, m, kernel, groups=m, activation_layer=activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.primary(x)
        return torch.cat([y, self.cheap(y)], dim=1)[:, : self.cout]


class MBConvS(nn.Module):
    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int, cheap_kernel: int = 3):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(CheapConv(cin, hidden, cheap_kernel))
        layers += [
            Conv2dNormActivation(hidden, hidden, kernel, stride=stride, groups=hidden, activation_layer=nn.SiLU),
            SqueezeExcitation(hidden, max(1, cin // 4), activation=nn.SiLU),
            CheapConv(hidden, cout, cheap_kernel, activation=None),
        ]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.residual else out


def _head(channels: int, num_classes: int, dropout: float = 0.3) -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, num_classes))


def _letters(n: int) -> str:
    return "abcdefghij"[:n]


def efficientnet_b2s(num_classes: int = 10, in_channels: int = 3, image_size: int = 224) -> nn.Sequential:
    blocks: list[tuple[str, nn.Module]] = [
        ("stem", Conv2dNormActivation(in_channels, STEM, 3, stride=2, activation_layer=nn.SiLU))
    ]
    cin = STEM
    for stage, (expand, kernel, stride, cout, layers) in enumerate(B2_STAGES, start=1):
        for i, letter in enumerate(_letters(layers)):
            blocks.append((f"{stage}{letter}", MBConvS(cin, cout, expand, kernel, stride if i == 0 else 1)))
            cin = cout
    blocks += [("top", Conv2dNormActivation(cin, TOP, 1, activation_layer=nn.SiLU)), ("head", _head(TOP, num_classes))]
    model = nn.Sequential(OrderedDict(blocks))
    _init(model)
    return model


def efficientnet_b2(num_classes: int = 10, in_channels: int = 3, image_size: int = 224) -> nn.Sequential:
    base = tv_efficientnet_b2(weights=None, num_classes=num_classes)
    stem = base.features[0]
    if in_channels != 3:
        stem = Conv2dNormActivation(in_channels, STEM, 3, stride=2, activation_layer=nn.SiLU)
    blocks: list[tuple[str, nn.Module]] = [("stem", stem)]
    for stage in range(1, 8):
        for letter, block in zip(_letters(len(base.features[stage])), base.features[stage]):
            blocks.append((f"{stage}{letter}", block))
    blocks += [("top", base.features[8]), ("head", nn.Sequential(base.avgpool, nn.Flatten(), *base.classifier))]
    return nn.Sequential(OrderedDict(blocks))


def _init(model: nn.Module) -> None:
    """The paper's sec. 4.1: Kaiming normal (fan_out) for convolutions, BN weight 1 bias 0,
    and torchvision's uniform init for the linear layer."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            bound = 1.0 / m.out_features**0.5
            nn.init.uniform_(m.weight, -bound, bound)
            nn.init.zeros_(m.bias)


def operation_counts(model: nn.Module, image_size: int, in_channels: int = 3) -> dict[str, int]:
    """Per-sample forward counts at image_size x image_size, by counting convention:

    - mult_adds: multiply-adds of the convolutions and linear layers (what torch's
      FlopCounterMode counts, halved; the EfficientNet paper's "FLOPS", Tan & Le 2019, Table 2);
    - with_elementwise: mult_adds plus one operation per output element of every batch norm
      and every activation (SiLU, sigmoid, ReLU), the convention that reproduces the HFSL
      paper's Table 2 figures (B2 1.020 B at 260x260, B2s 0.421 B at 224x224).
    """
    counts = {"mult_adds": 0, "elementwise": 0}

    def conv_linear(m, _, out):
        if isinstance(m, nn.Conv2d):
            counts["mult_adds"] += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        else:
            counts["mult_adds"] += m.in_features * m.out_features * (out.numel() // m.out_features)

    def elementwise(_, __, out):
        counts["elementwise"] += out.numel()

    hooks = [m.register_forward_hook(conv_linear) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    hooks += [
        m.register_forward_hook(elementwise)
        for m in model.modules()
        if isinstance(m, (nn.BatchNorm2d, nn.SiLU, nn.Sigmoid, nn.ReLU))
    ]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_channels, image_size, image_size))
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return {"mult_adds": counts["mult_adds"], "with_elementwise": counts["mult_adds"] + counts["elementwise"]}
