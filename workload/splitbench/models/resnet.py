"""ResNet18 from torchvision's BasicBlock, with the CIFAR stem (3x3 conv, no max-pool) or
torchvision's ImageNet stem (7x7 stride-2 conv, 3x3 stride-2 max-pool). The stem sets every
cut's size: at 32x32 the CIFAR stem's features are larger than the raw image at every
cut, the ImageNet stem's are 16x smaller (the early-exit method note, sec. 2 and 5)."""

from collections import OrderedDict

from torch import nn
from torchvision.models.resnet import BasicBlock
from torchvision.ops import Conv2dNormActivation


def _downsample(cin: int, cout: int, stride: int) -> nn.Module | None:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))


def resnet18(num_classes: int = 10, in_channels: int = 3, image_size: int = 32, stem: str = "cifar") -> nn.Sequential:
    if stem == "cifar":
        first: nn.Module = Conv2dNormActivation(in_channels, 64, kernel_size=3)
    else:
        first = nn.Sequential(
            Conv2dNormActivation(in_channels, 64, kernel_size=7, stride=2),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
    blocks: list[tuple[str, nn.Module]] = [("stem", first)]
    cin = 64
    for stage, (cout, stride) in enumerate([(64, 1), (128, 2), (256, 2), (512, 2)], start=1):
        for i in range(2):
            s = stride if i == 0 else 1
            blocks.append((f"layer{stage}_{i}", BasicBlock(cin, cout, s, downsample=_downsample(cin, cout, s))))
            cin = cout
    blocks.append(("head", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes))))
    return nn.Sequential(OrderedDict(blocks))


def resnet18_imagenet_stem(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> nn.Sequential:
    return resnet18(num_classes, in_channels, image_size, stem="imagenet")
