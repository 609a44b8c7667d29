"""Models: the default MLP sized from a manifest, or a user factory ``module:factory``; flat-vector helpers."""

import importlib

import torch
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from storage import rng as rng_streams
from storage.errors import InputError


def default_mlp(input_dim: int, num_classes: int, hidden: int = 128) -> nn.Module:
    """features -> hidden (ReLU) -> classes; trained with cross-entropy."""
    return nn.Sequential(nn.Linear(input_dim, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


def build_model(spec: str | None, *, input_dim: int, num_classes: int, seed: int) -> nn.Module:
    """The default MLP (``spec`` None) or ``factory(input_dim, num_classes)`` from ``module:factory``.
    Initialised under ``torch.manual_seed(seed)`` so every process builds the same starting point."""
    torch.manual_seed(rng_streams.model_init_seed(seed))
    if spec is None:
        return default_mlp(input_dim, num_classes)
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise InputError(f"--model {spec}: expected module:factory, e.g. mypackage.models:make_model")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(f"--model {spec}: cannot import module {module_name!r} ({exc}); check the name and "
                         "that it is importable here") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise InputError(f"--model {spec}: module {module_name!r} has no callable {attr!r}")
    try:
        model = factory(input_dim, num_classes)
    except Exception as exc:  # noqa: BLE001 - a failing user factory is bad input, named as such
        raise InputError(f"--model {spec}: {attr}(input_dim={input_dim}, num_classes={num_classes}) failed: "
                         f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise InputError(f"--model {spec}: {attr}({input_dim}, {num_classes}) returned {type(model).__name__}, "
                         "not a torch.nn.Module")
    return model


def get_flat(model: nn.Module) -> torch.Tensor:
    return parameters_to_vector(model.parameters()).detach().clone()


def set_flat(model: nn.Module, flat: torch.Tensor) -> None:
    """Copy ``flat`` into the parameters. (vector_to_parameters makes the parameters views of its argument,
    so without the clone local steps would write into the caller's vector, e.g. the pulled centre.)"""
    with torch.no_grad():
        vector_to_parameters(flat.clone(), model.parameters())


def make_local_optimizer(name: str, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr)
    if name == "momentum":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True)
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr)
    raise ValueError(f"unknown local optimizer {name!r}; choose sgd, momentum or adam")


@torch.no_grad()
def evaluate(model: nn.Module, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of parameters ``flat`` on (x, y)."""
    set_flat(model, flat)
    model.eval()
    logits = model(x)
    return float(nn.functional.cross_entropy(logits, y)), float((logits.argmax(1) == y).float().mean())
