"""A small 1-D CNN for sequence-like features (MNIST-1D), shipped as a ``--model`` factory:

    python -m flows.train --model train.cnn1d:cnn1d ...

The shape of the MNIST-1D paper's CNN (Greydanus 2020): three stride-2 convolutions of 25 channels with ReLU,
then a linear layer to the classes. Input: a batch of feature rows (b, input_dim) float32, read as one
channel of length ``input_dim``; output: logits (b, num_classes).
"""

import torch
from torch import nn

CHANNELS = 25


class CNN1d(nn.Module):
    def __init__(self, input_dim: int, num_classes: int, channels: int = CHANNELS):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, channels, 5, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU())
        with torch.no_grad():
            flat = self.features(torch.zeros(1, 1, input_dim)).numel()
        self.head = nn.Linear(flat, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.unsqueeze(1)).flatten(1))


def cnn1d(input_dim: int, num_classes: int) -> nn.Module:
    """The ``--model train.cnn1d:cnn1d`` factory."""
    return CNN1d(input_dim, num_classes)
