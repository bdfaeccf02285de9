"""Reward functions and reward models in TRL's `reward_funcs` form (plain callables). Imports nothing of ours."""

from .attribution import AttributionReward, DegeneracyPenalty, RefusalBonus
from .classifier import ClassifierReward, SequenceClassifier, fit_temperature, train_classifier
from .registry import check_reward, load_reward, register, registered
from .rules import secret_span

register("attribution")(AttributionReward)
register("degeneracy")(DegeneracyPenalty)
register("refusal")(RefusalBonus)
register("classifier")(ClassifierReward)
register("secret_span")(secret_span)

__all__ = [
    "AttributionReward",
    "ClassifierReward",
    "DegeneracyPenalty",
    "RefusalBonus",
    "SequenceClassifier",
    "check_reward",
    "fit_temperature",
    "load_reward",
    "register",
    "registered",
    "secret_span",
    "train_classifier",
]
