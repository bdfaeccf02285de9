"""Unlearning methods as TRL trainers: one module a method, each an `XConfig` and an `XTrainer`."""

from .base import RetainRegularizedConfig, UnlearningConfig, UnlearningTrainer
from .dareu import DareUConfig, DareUTrainer
from .flat import FLATConfig, FLATTrainer
from .ga import GAConfig, GATrainer
from .graddiff import GradDiffConfig, GradDiffTrainer
from .idkdpo import IdkDPOConfig, IdkDPOTrainer
from .llmu import LLMUConfig, LLMUTrainer
from .neural_ucb import NeuralUCB
from .npo import NPOConfig, NPOTrainer
from .reveal_release import RevealReleaseConfig, RevealReleaseTrainer, TargetRelevance
from .simnpo import SimNPOConfig, SimNPOTrainer
from .utils import NonFiniteLossError, RetainCollapseError, TrainingGuardError

# Method name (as the command line spells it) -> (config class, trainer class).
METHODS = {
    "flat": (FLATConfig, FLATTrainer),
    "llmu": (LLMUConfig, LLMUTrainer),
    "ga": (GAConfig, GATrainer),
    "graddiff": (GradDiffConfig, GradDiffTrainer),
    "npo": (NPOConfig, NPOTrainer),
    "simnpo": (SimNPOConfig, SimNPOTrainer),
    "idkdpo": (IdkDPOConfig, IdkDPOTrainer),
    "dareu": (DareUConfig, DareUTrainer),
    "reveal_release": (RevealReleaseConfig, RevealReleaseTrainer),
}

__all__ = [
    "METHODS",
    "DareUConfig",
    "DareUTrainer",
    "FLATConfig",
    "FLATTrainer",
    "GAConfig",
    "GATrainer",
    "GradDiffConfig",
    "GradDiffTrainer",
    "IdkDPOConfig",
    "IdkDPOTrainer",
    "LLMUConfig",
    "LLMUTrainer",
    "NPOConfig",
    "NeuralUCB",
    "NPOTrainer",
    "NonFiniteLossError",
    "RetainCollapseError",
    "RetainRegularizedConfig",
    "RevealReleaseConfig",
    "RevealReleaseTrainer",
    "SimNPOConfig",
    "SimNPOTrainer",
    "TargetRelevance",
    "TrainingGuardError",
    "UnlearningConfig",
    "UnlearningTrainer",
]
