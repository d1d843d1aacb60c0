"""The model registry: named torch models that nodes and the coordinator both build.

A model is registered once under a name; a second registration under the same name is
refused (no silent overwrite), so a job spec's ``model = "logreg"`` always means the
same architecture at every node.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from federation.errors import RegistryError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["ModelFactory", "build_model", "model_names", "register_model"]

#: Builds a model from (number of input features, hidden units).
ModelFactory = Callable[[int, int], "nn.Module"]

_REGISTRY: dict[str, ModelFactory] = {}


def register_model(name: str, factory: ModelFactory) -> None:
    """Register ``factory`` under ``name``.

    Raises:
        RegistryError: ``name`` is already registered.
    """
    if name in _REGISTRY:
        raise RegistryError(f"model {name!r} is already registered")
    _REGISTRY[name] = factory


def model_names() -> list[str]:
    """Return the registered model names, sorted."""
    return sorted(_REGISTRY)


def build_model(name: str, n_features: int, hidden_units: int = 16) -> nn.Module:
    """Build a fresh model that outputs one logit per row.

    Returns:
        The torch module (weights from torch's default initialisation; seed torch first).

    Raises:
        RegistryError: no model of that name.
        ValueError: ``n_features`` < 1.
    """
    if name not in _REGISTRY:
        raise RegistryError(f"unknown model {name!r}; known: {model_names()}")
    if n_features < 1:
        raise ValueError("n_features must be at least 1")
    return _REGISTRY[name](n_features, hidden_units)


def _logreg(n_features: int, _hidden: int) -> nn.Module:
    from torch import nn

    return nn.Linear(n_features, 1)


def _mlp(n_features: int, hidden: int) -> nn.Module:
    from torch import nn

    return nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, 1))


register_model("logreg", _logreg)
register_model("mlp", _mlp)
