"""Forget/retain bundles (TOFU or generated), refusal templates, and builders of TRL datasets."""

from .builders import (
    DEFAULT_QUESTION_TEMPLATE,
    NONE_LABEL,
    PromptFormat,
    attribution_dataset,
    preference_dataset,
    prompt_dataset,
    sft_dataset,
)
from .bundle import EVAL_SPLITS, UnlearningBundle
from .generator import generate_authors
from .instructions import REVEAL_INSTRUCTIONS, reveal_instructions
from .refusals import REFUSALS, load_refusals
from .tofu import TOFU_HUB_ID, load_tofu, load_tofu_split

__all__ = [
    "DEFAULT_QUESTION_TEMPLATE",
    "EVAL_SPLITS",
    "NONE_LABEL",
    "REFUSALS",
    "REVEAL_INSTRUCTIONS",
    "TOFU_HUB_ID",
    "PromptFormat",
    "UnlearningBundle",
    "attribution_dataset",
    "generate_authors",
    "load_refusals",
    "load_tofu",
    "load_tofu_split",
    "preference_dataset",
    "reveal_instructions",
    "prompt_dataset",
    "sft_dataset",
]
