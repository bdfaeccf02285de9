"""Unlearning methods as TRL trainers: one module a method, each an `XConfig` and an `XTrainer`."""

from .base import UnlearningConfig, UnlearningTrainer
from .ga import GAConfig, GATrainer
from .utils import NonFiniteLossError

# Method name (as the command line spells it) -> (config class, trainer class).
METHODS = {
    "ga": (GAConfig, GATrainer),
}

__all__ = ["METHODS", "GAConfig", "GATrainer", "NonFiniteLossError", "UnlearningConfig", "UnlearningTrainer"]
