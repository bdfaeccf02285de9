"""Evaluation of a model on the splits of an unlearning bundle."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..data import PromptFormat, UnlearningBundle
from .metrics import answer_probability, rouge_l
from .scoring import generate_answers, score_answers

__all__ = ["answer_probability", "evaluate_model", "generate_answers", "rouge_l", "score_answers"]


def evaluate_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    bundle: UnlearningBundle,
    fmt: PromptFormat = PromptFormat(),
    splits: Sequence[str] = ("forget", "retain"),
    max_new_tokens: int = 200,
    batch_size: int = 64,
    progress: bool = True,
) -> dict[str, dict]:
    """Answer probability and ROUGE-L (recall, F1) of greedy answers on each split, with per-example values."""
    results = {}
    for split in splits:
        if split not in bundle.eval_splits:
            raise ValueError(
                f"The bundle {bundle.name!r} has no {split!r} evaluation split; it has {list(bundle.eval_splits)}."
            )
        data = bundle.eval_splits[split]
        prompts = [fmt.prompt(q) for q in data["question"]]
        token_logps = score_answers(
            model,
            tokenizer,
            prompts,
            [fmt.completion(a) for a in data["answer"]],
            batch_size,
            desc=f"{split}: scoring" if progress else None,
        )
        generations = generate_answers(
            model, tokenizer, prompts, max_new_tokens, batch_size, desc=f"{split}: generating" if progress else None
        )
        probability = answer_probability(token_logps)
        rouge = rouge_l(generations, data["answer"])
        results[split] = {
            "probability": float(np.mean(probability)),
            "rougeL_recall": float(np.mean(rouge["recall"])),
            "rougeL_f1": float(np.mean(rouge["f1"])),
            "per_example": {
                "probability": probability.tolist(),
                "rougeL_recall": rouge["recall"].tolist(),
                "generation": generations,
            },
        }
    return results
