"""A user model factory for the --model test: ``tests.train.models:wide``."""

from torch import nn


def wide(input_dim: int, num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Linear(input_dim, 256), nn.Tanh(), nn.Linear(256, num_classes))


def not_a_module(input_dim: int, num_classes: int):
    return "nope"


def three_logits(input_dim: int, num_classes: int) -> nn.Module:
    return nn.Linear(input_dim, 3)
