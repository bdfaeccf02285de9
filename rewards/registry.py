"""Rewards by name: the built-ins, the ones users register, import paths, and sequence-classification models.

A reward is anything TRL's `reward_funcs` takes: `f(prompts, completions, **kwargs) -> list[float]`, one value per
completion (the dataset's other columns arrive as keyword lists). `load_reward(spec, **options)` resolves `spec` as

1. a registered name (`rewards.register("name")` on a class or a function);
2. an import path, `package.module:attribute` (or `package.module.attribute`);
3. a folder or model id of a sequence-classification model, optionally `#label` (default: the last label): the reward
   is that label's probability on prompt + completion.

A class is instantiated with `options`; a function is the reward itself and takes no options.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from pathlib import Path

from .classifier import ClassifierReward, SequenceClassifier

_REGISTRY: dict[str, Callable] = {}


def register(name: str) -> Callable:
    """Decorator: make a reward class or function loadable as `name`."""

    def decorate(reward: Callable) -> Callable:
        if name in _REGISTRY and _REGISTRY[name] is not reward:
            raise ValueError(f"A reward named {name!r} is registered already ({_REGISTRY[name]!r}).")
        _REGISTRY[name] = reward
        return reward

    return decorate


def registered() -> list[str]:
    return sorted(_REGISTRY)


def _import(path: str) -> Callable | None:
    module_name, _, attribute = path.rpartition(":") if ":" in path else path.rpartition(".")
    if not module_name:
        return None
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    return getattr(module, attribute, None)


def check_reward(spec: str) -> None:
    """Fail, before anything loads, when `spec` names no reward: not registered, not importable, and not a folder of a
    sequence-classification model."""
    if spec in _REGISTRY or _import(spec) is not None:
        return
    if not (Path(spec.partition("#")[0]) / "config.json").is_file():
        raise ValueError(
            f"Unknown reward {spec!r}: not a registered name ({', '.join(registered())}), an importable "
            "`module:attribute`, or a folder of a sequence-classification model."
        )


def load_reward(spec: str | Callable, **options) -> Callable:
    """The reward callable that `spec` names (see the module docstring); `options` go to a class's constructor."""
    if callable(spec) and not inspect.isclass(spec):
        reward = spec
    else:
        found = spec if inspect.isclass(spec) else _REGISTRY.get(spec) or _import(spec)
        if found is None:
            check_reward(spec)
            path, _, label = spec.partition("#")
            classifier = SequenceClassifier.from_pretrained(path)
            return ClassifierReward(classifier, label or classifier.labels[-1], name=Path(path).name, **options)
        if inspect.isclass(found):
            return found(**options)
        reward = found
    if options:
        raise ValueError(f"The reward {spec!r} is a function: it takes no options, got {sorted(options)}.")
    return reward
