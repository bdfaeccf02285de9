"""The de-attribution reward of DareU and the shaping terms that keep it honest.

DareU ("De-attribute to Forget for LLM Unlearning", 2026) rewards answers that an attribution classifier no longer
attributes to the owners of the forget data:

    r_attr(x, y) = − Σ_{o ∈ forget owners} p_φ(o | text),   text = x ⊕ y (or y alone)

with p_φ the (temperature-calibrated) classifier. A policy can zero that mass by emitting garbage, so two shaping
terms join it with weights: `DegeneracyPenalty` (empty or looping answers) and, optionally, `RefusalBonus`.
"""

from __future__ import annotations

from collections.abc import Sequence

from rouge_score import rouge_scorer, tokenizers

from .classifier import ClassifierReward, SequenceClassifier, as_text


class AttributionReward(ClassifierReward):
    """r = −(probability mass the attribution classifier puts on the forget owners), in [−1, 0].

    Args:
        classifier: a `SequenceClassifier` whose labels include every forget owner, or the folder of one.
        forget_owners: the labels of the owners of the forget data.
        scope: `completion` (default: the answer alone, so the question's name does not give it away) or
            `prompt_completion`.
    """

    def __init__(self, classifier: SequenceClassifier | str, forget_owners: Sequence[str], scope: str = "completion"):
        if not forget_owners:
            raise ValueError("AttributionReward needs the labels of the forget owners; none were given.")
        super().__init__(classifier, forget_owners, scope=scope, sign=-1.0, name="attribution")


class DegeneracyPenalty:
    """r = −1 for an empty answer, else −(share of repeated word n-grams), in [−1, 0]: a looping answer scores near −1,
    a fluent one 0."""

    __name__ = "degeneracy"

    def __init__(self, ngram: int = 2):
        if ngram < 1:
            raise ValueError(f"ngram={ngram}: count repeats of n-grams with n >= 1.")
        self.ngram = ngram

    def penalty(self, text: str) -> float:
        words = text.split()
        if not words:
            return -1.0
        ngrams = [tuple(words[i : i + self.ngram]) for i in range(len(words) - self.ngram + 1)]
        if not ngrams:
            return 0.0
        return -(1.0 - len(set(ngrams)) / len(ngrams))

    def __call__(self, prompts: Sequence, completions: Sequence, **kwargs) -> list[float]:
        return [self.penalty(as_text(c)) for c in completions]


class RefusalBonus:
    """r = 1 when the answer is a refusal (ROUGE-L F1 with one of `refusals` at least `threshold`), else 0."""

    __name__ = "refusal"

    def __init__(self, refusals: Sequence[str], threshold: float = 0.6):
        if not refusals:
            raise ValueError("RefusalBonus needs refusal templates to compare answers with; none were given.")
        self.refusals = list(refusals)
        self.threshold = threshold
        # rouge-score's default tokenizer, passed in: else it logs through absl, which configures the root logger.
        self.scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=tokenizers.DefaultTokenizer(use_stemmer=True))

    def bonus(self, text: str) -> float:
        best = max(self.scorer.score(refusal, text)["rougeL"].fmeasure for refusal in self.refusals)
        return float(best >= self.threshold)

    def __call__(self, prompts: Sequence, completions: Sequence, **kwargs) -> list[float]:
        return [self.bonus(as_text(c)) for c in completions]
