"""Metric definitions on scored answers (TOFU, Maini et al. 2024; open-unlearning where the paper is vague)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from rouge_score import rouge_scorer


def answer_probability(token_logps: Sequence[np.ndarray]) -> np.ndarray:
    """TOFU's probability of each answer: exp of the mean answer-token log-probability (length-normalised)."""
    return np.array([np.exp(lp.mean()) for lp in token_logps])


@lru_cache(maxsize=1)
def _rouge_l_scorer() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> dict[str, np.ndarray]:
    """ROUGE-L recall and F1 of each prediction against its reference (`rouge-score`, with stemming)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references.")
    scores = [_rouge_l_scorer().score(ref, pred)["rougeL"] for pred, ref in zip(predictions, references)]
    return {"recall": np.array([s.recall for s in scores]), "f1": np.array([s.fmeasure for s in scores])}
