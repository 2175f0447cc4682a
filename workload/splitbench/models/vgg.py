"""CIFAR-style VGG with batch norm: torchvision's configurations, a 512-wide classifier.

Each conv-bn-relu is one block and each max-pool is its own block, so VGG11-BN cut after
block 4 (its second pooling stage) sends 128 x 8 x 8 activations for a 32x32 input.
"""

from collections import OrderedDict

from torch import nn
from torchvision.models.vgg import cfgs
from torchvision.ops import Conv2dNormActivation


def _vgg(cfg: str, num_classes: int, in_channels: int, image_size: int) -> nn.Sequential:
    layers: list[tuple[str, nn.Module]] = []
    channels, side, stage, conv = in_channels, image_size, 1, 1
    for v in cfgs[cfg]:
        if v == "M":
            layers.append((f"pool{stage}", nn.MaxPool2d(2)))
            side //= 2
            stage, conv = stage + 1, 1
        else:
            layers.append((f"conv{stage}_{conv}", Conv2dNormActivation(channels, int(v), kernel_size=3)))
            channels, conv = int(v), conv + 1
    layers.append(("classifier", nn.Sequential(nn.Flatten(), nn.Linear(channels * side * side, num_classes))))
    return nn.Sequential(OrderedDict(layers))


def vgg11_bn(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> nn.Sequential:
    return _vgg("A", num_classes, in_channels, image_size)


def vgg16_bn(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> nn.Sequential:
    return _vgg("D", num_classes, in_channels, image_size)
