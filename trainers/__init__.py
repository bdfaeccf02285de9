"""Unlearning methods as TRL trainers: one module a method, each an `XConfig` and an `XTrainer`.

Modules load on first use (`METHODS["ga"]`, `from rlunlearn.trainers import GAConfig`), so that listing the methods, as
the command line's help does, imports neither torch nor TRL's trainers.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, MutableMapping


class MethodRegistry(MutableMapping):
    """Method name (as the command line spells it) -> (config class, trainer class). An entry given as
    (module, config class name, trainer class name) is imported when first looked up; `METHODS[name] = (config
    class, trainer class)` registers a method of your own."""

    def __init__(self, entries: dict[str, tuple]):
        self._entries = dict(entries)

    def __getitem__(self, name: str) -> tuple[type, type]:
        entry = self._entries[name]
        if isinstance(entry[0], str):
            module = importlib.import_module(f"{__name__}.{entry[0]}")
            entry = self._entries[name] = (getattr(module, entry[1]), getattr(module, entry[2]))
        return entry

    def __setitem__(self, name: str, classes: tuple[type, type]) -> None:
        self._entries[name] = classes

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


# Each method's module, config class and trainer class.
_BUILT_IN = {
    "flat": ("flat", "FLATConfig", "FLATTrainer"),
    "llmu": ("llmu", "LLMUConfig", "LLMUTrainer"),
    "ga": ("ga", "GAConfig", "GATrainer"),
    "graddiff": ("graddiff", "GradDiffConfig", "GradDiffTrainer"),
    "npo": ("npo", "NPOConfig", "NPOTrainer"),
    "simnpo": ("simnpo", "SimNPOConfig", "SimNPOTrainer"),
    "idkdpo": ("idkdpo", "IdkDPOConfig", "IdkDPOTrainer"),
    "dareu": ("dareu", "DareUConfig", "DareUTrainer"),
    "reveal_release": ("reveal_release", "RevealReleaseConfig", "RevealReleaseTrainer"),
    "rmu": ("rmu", "RMUConfig", "RMUTrainer"),
    "undial": ("undial", "UNDIALConfig", "UNDIALTrainer"),
    "satimp": ("satimp", "SatImpConfig", "SatImpTrainer"),
    "wga": ("wga", "WGAConfig", "WGATrainer"),
    "ceu": ("ceu", "CEUConfig", "CEUTrainer"),
    "pdu": ("pdu", "PDUConfig", "PDUTrainer"),
}
METHODS = MethodRegistry(_BUILT_IN)

# Public name -> the module that defines it.
_MODULE_OF = {
    **{name: module for module, *names in _BUILT_IN.values() for name in names},
    "RetainRegularizedConfig": "base",
    "UnlearningConfig": "base",
    "UnlearningTrainer": "base",
    "NeuralUCB": "neural_ucb",
    "TargetRelevance": "reveal_release",
    "NonFiniteLossError": "utils",
    "RetainCollapseError": "utils",
    "TrainingGuardError": "utils",
}


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)


__all__ = [
    "METHODS",
    "CEUConfig",
    "CEUTrainer",
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
    "MethodRegistry",
    "NeuralUCB",
    "NonFiniteLossError",
    "NPOConfig",
    "NPOTrainer",
    "PDUConfig",
    "PDUTrainer",
    "RetainCollapseError",
    "RetainRegularizedConfig",
    "RevealReleaseConfig",
    "RevealReleaseTrainer",
    "RMUConfig",
    "RMUTrainer",
    "SatImpConfig",
    "SatImpTrainer",
    "SimNPOConfig",
    "SimNPOTrainer",
    "TargetRelevance",
    "TrainingGuardError",
    "UNDIALConfig",
    "UNDIALTrainer",
    "UnlearningConfig",
    "UnlearningTrainer",
    "WGAConfig",
    "WGATrainer",
]
