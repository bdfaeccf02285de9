"""Forget/retain bundles (TOFU or generated authors, harmful answers, WMDP, MUSE; each task with its offline stand-in),
refusal templates, and builders of TRL datasets.

Names load from their module on first use, so that a light module of the package (`rlunlearn.data.draws`, which the
command line's options read) imports neither datasets nor torch.
"""

from __future__ import annotations

import importlib

# Public name -> the module of this package that defines it.
_MODULE_OF = {
    **{
        name: "builders"
        for name in (
            "DEFAULT_QUESTION_TEMPLATE",
            "NONE_LABEL",
            "PromptFormat",
            "attribution_dataset",
            "preference_dataset",
            "prompt_dataset",
            "sft_dataset",
            "text_prompts",
        )
    },
    "EVAL_SPLITS": "bundle",
    "TASK_EVAL_SPLITS": "bundle",
    "UnlearningBundle": "bundle",
    "generate_authors": "generator",
    "generate_harmful": "harmful",
    "load_harmful": "harmful",
    "generate_wmdp": "wmdp",
    "load_wmdp": "wmdp",
    "generate_muse": "muse",
    "load_muse": "muse",
    "REVEAL_INSTRUCTIONS": "instructions",
    "reveal_instructions": "instructions",
    "REFUSALS": "refusals",
    "TASK_REFUSALS": "refusals",
    "load_refusals": "refusals",
    "TOFU_HUB_ID": "tofu",
    "load_tofu": "tofu",
    "load_tofu_split": "tofu",
}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
