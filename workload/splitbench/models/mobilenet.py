"""MobileNetV2 from torchvision, with a stride-1 stem for 32x32 inputs (CIFAR variant)."""

from collections import OrderedDict

from torch import nn
from torchvision.models import mobilenet_v2 as tv_mobilenet_v2
from torchvision.ops import Conv2dNormActivation


def mobilenet_v2(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> nn.Sequential:
    base = tv_mobilenet_v2(weights=None, num_classes=num_classes)
    features = list(base.features.children())
    stride = 1 if image_size <= 64 else 2  # small inputs would shrink to nothing otherwise
    features[0] = Conv2dNormActivation(in_channels, 32, kernel_size=3, stride=stride, activation_layer=nn.ReLU6)
    blocks = [(f"features{i}", m) for i, m in enumerate(features)]
    blocks.append(("head", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), *base.classifier)))
    return nn.Sequential(OrderedDict(blocks))
