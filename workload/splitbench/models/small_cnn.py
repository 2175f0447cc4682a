"""A small CNN for 28x28 grey images (Fashion-MNIST): two conv stages and two dense layers.

Plain torch only: a source that trains it never imports torchvision. Each conv stage has
the module tree of torchvision's Conv2dNormActivation (0: conv without bias, 1: batch norm,
2: ReLU), so parameter names, state_dict keys and therefore weight messages are unchanged.
"""

from collections import OrderedDict

from torch import nn


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=(kernel_size - 1) // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def small_cnn(num_classes: int = 10, in_channels: int = 1, image_size: int = 28) -> nn.Sequential:
    side = image_size // 4
    return nn.Sequential(
        OrderedDict(
            [
                ("conv1", _conv_bn_relu(in_channels, 32)),
                ("pool1", nn.MaxPool2d(2)),
                ("conv2", _conv_bn_relu(32, 64)),
                ("pool2", nn.MaxPool2d(2)),
                ("fc1", nn.Sequential(nn.Flatten(), nn.Linear(64 * side * side, 128), nn.ReLU(inplace=True))),
                ("fc2", nn.Linear(128, num_classes)),
            ]
        )
    )
