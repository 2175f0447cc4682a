"""A small CNN for 28x28 grey images (Fashion-MNIST): two conv stages and two dense layers."""
from collections import OrderedDict

from torch import nn
from torchvision.ops import Conv2dNormActivation


def small_cnn(num_classes: int = 10, in_channels: int = 1, image_size: int = 28) -> nn.Sequential:
    side = image_size // 4
    return nn.Sequential(OrderedDict([
        ("conv1", Conv2dNormActivation(in_channels, 32, kernel_size=3)),
        ("pool1", nn.MaxPool2d(2)),
        ("conv2", Conv2dNormActivation(32, 64, kernel_size=3)),
        ("pool2", nn.MaxPool2d(2)),
        ("fc1", nn.Sequential(nn.Flatten(), nn.Linear(64 * side * side, 128), nn.ReLU(inplace=True))),
        ("fc2", nn.Linear(128, num_classes)),
    ]))
