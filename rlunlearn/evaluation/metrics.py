"""Metric definitions, as pure functions of scored answers.

Sources: TOFU (Maini et al., 2024, arXiv 2401.06121), MUSE (Shi et al., 2024, arXiv 2407.06460), and open-unlearning's
implementation where the papers leave a detail open; where two variants exist, both are named. Conventions shared
with open-unlearning: a "length-normalised probability" is exp(mean log-probability of the answer tokens, the final
EOS included); token-level memorisation and membership scores leave that final EOS out.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np
from rouge_score import rouge_scorer, tokenizers
from scipy.stats import hmean, ks_2samp
from sklearn.metrics import roc_auc_score

# open-unlearning's guard against division by zero, kept so that values match theirs.
EPS = 1e-10
MIN_K = 0.4  # the fraction of lowest-scoring tokens of Min-K% and Min-K%++ (MUSE's and open-unlearning's setting)
# The splits and values whose harmonic mean is TOFU's model utility.
MODEL_UTILITY_SPLITS = ("retain", "real_authors", "world_facts")


def probability(mean_logps: np.ndarray) -> np.ndarray:
    """TOFU's probability of each answer: exp of its mean token log-probability (length-normalised)."""
    return np.exp(np.asarray(mean_logps, dtype=float))


def normalized_probability(true_mean_logps: np.ndarray, perturbed_mean_logps: Sequence[Sequence[float]]) -> np.ndarray:
    """TOFU's probability for real authors and world facts: P(true) / (P(true) + Σ P(perturbed)), each P
    length-normalised."""
    true = probability(true_mean_logps)
    wrong = np.array([probability(row).sum() for row in perturbed_mean_logps])
    return true / (true + wrong + EPS)


def truth_ratio(correct_mean_logps: np.ndarray, perturbed_mean_logps: Sequence[Sequence[float]]) -> np.ndarray:
    """TOFU's truth ratio of each example: R = (geometric mean over the perturbed answers of their length-normalised
    probability) / (length-normalised probability of the correct answer).

    The correct answer is the paraphrased answer on forget and retain data, the answer itself on real authors and
    world facts (TOFU's choice). R < 1 means the model prefers the truth.
    """
    wrong = np.exp([np.mean(row) for row in perturbed_mean_logps])
    return wrong / (probability(correct_mean_logps) + EPS)


def truth_ratio_closer_to_1(ratios: np.ndarray) -> float:
    """Forget aggregate (open-unlearning's `closer_to_1_better`): mean of min(R, 1/R); 1 when true and false answers
    are equally likely, as for a model that never learned them."""
    ratios = np.asarray(ratios, dtype=float)
    return float(np.mean(np.minimum(ratios, 1 / (ratios + EPS))))


def truth_ratio_true_better(ratios: np.ndarray) -> float:
    """Retain/real-authors/world-facts aggregate (open-unlearning's `true_better`): mean of max(0, 1 - R)."""
    return float(np.mean(np.maximum(0.0, 1 - np.asarray(ratios, dtype=float))))


def truth_ratio_para_share(ratios: np.ndarray) -> float:
    """The variant P_para / (P_para + P_pert) = 1 / (1 + R), averaged: the share of the correct answer."""
    return float(np.mean(1 / (1 + np.asarray(ratios, dtype=float))))


def forget_quality_test(model_ratios: np.ndarray, retain_model_ratios: np.ndarray) -> tuple[float, float]:
    """TOFU's forget quality and the statistic it comes from: the p-value and the statistic D of a two-sample
    Kolmogorov-Smirnov test between the per-example forget truth ratios of the evaluated model and of the retain model.
    D moves in steps of 1/n on n questions, so it shows differences that a p-value near 0 hides. open-unlearning tests
    1/R instead of R, which gives the same test (a monotone transform of both samples)."""
    test = ks_2samp(np.asarray(model_ratios), np.asarray(retain_model_ratios))
    return float(test.pvalue), float(test.statistic)


def forget_quality(model_ratios: np.ndarray, retain_model_ratios: np.ndarray) -> float:
    """TOFU's forget quality: the p-value of `forget_quality_test`."""
    return forget_quality_test(model_ratios, retain_model_ratios)[0]


def model_utility(values: Mapping[str, float]) -> float:
    """TOFU's model utility: the harmonic mean of probability, ROUGE-L recall and truth ratio (true_better) on the
    retain, real-authors and world-facts splits (9 values; the caller names any that are missing)."""
    if not values:
        raise ValueError("model utility needs at least one value")
    return float(hmean(list(values.values())))


def exact_memorization(is_top1: np.ndarray) -> float:
    """Exact memorisation (Tirumala et al., 2022): the fraction of answer tokens, the final EOS left out, that are
    the model's most likely next token under teacher forcing."""
    tokens = np.asarray(is_top1, dtype=bool)[:-1]
    return float(tokens.mean()) if tokens.size else 0.0


def extraction_strength(is_top1: np.ndarray) -> float:
    """Extraction strength (Carlini et al., 2021, as open-unlearning defines it): ES = 1 - k/|y| with k the shortest
    prefix of the answer y (final EOS left out) after which the model's teacher-forced greedy predictions reproduce
    the rest of y exactly.

    k ranges over 0..|y| (the empty rest always matches), so an answer whose last token is mispredicted scores 0;
    open-unlearning's loop stops at k = |y| - 1 and scores 1/|y| there.
    """
    tokens = np.asarray(is_top1, dtype=bool)[:-1]
    if tokens.size == 0:
        return 0.0
    mismatches = np.flatnonzero(~tokens)
    k = 0 if mismatches.size == 0 else int(mismatches[-1]) + 1
    return 1 - k / tokens.size


@lru_cache(maxsize=2)
def _rouge_l_scorer(stemmer: bool) -> rouge_scorer.RougeScorer:
    # rouge-score's own tokenizer, passed in: left to pick it, rouge-score logs through absl, which gives the root logger
    # a handler (logging.basicConfig), and every message that reaches the root then prints.
    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=tokenizers.DefaultTokenizer(use_stemmer=stemmer))


def rouge_l(predictions: Sequence[str], references: Sequence[str], stemmer: bool = True) -> dict[str, np.ndarray]:
    """ROUGE-L recall and F1 of each prediction against its reference (`rouge-score`; with stemming as TOFU scores,
    without as MUSE's code does)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references.")
    scorer = _rouge_l_scorer(stemmer)
    scores = [scorer.score(ref, pred)["rougeL"] for pred, ref in zip(predictions, references)]
    return {"recall": np.array([s.recall for s in scores]), "f1": np.array([s.fmeasure for s in scores])}


# ---- membership inference: higher score = more likely NOT a member (open-unlearning's orientation) -----------------


# The membership-inference attacks every evaluation runs (the reference attack needs the retain model: report.py).
MIA_ATTACKS = ("loss", "zlib", "min_k", "min_k_plus_plus", "gradnorm")


def mia_loss(mean_logps: np.ndarray) -> np.ndarray:
    """LOSS attack (Yeom et al., 2018): the mean token loss of the answer."""
    return -np.asarray(mean_logps, dtype=float)


def mia_zlib(mean_logps: np.ndarray, texts: Sequence[str]) -> np.ndarray:
    """zlib attack (Carlini et al., 2021): the mean token loss divided by the zlib-compressed length of the text."""
    entropy = np.array([len(zlib.compress(text.encode("utf-8"))) for text in texts])
    return mia_loss(mean_logps) / entropy


def _lowest_fraction_mean(values: np.ndarray, k: float) -> float:
    if values.size == 0:
        return 0.0
    return float(-np.mean(np.sort(values)[: max(1, int(values.size * k))]))


def mia_min_k(token_logps: Sequence[np.ndarray], k: float = MIN_K) -> np.ndarray:
    """Min-K% Prob (Shi et al., 2024): minus the mean of the lowest k fraction of token log-probabilities."""
    return np.array([_lowest_fraction_mean(np.asarray(lp)[:-1], k) for lp in token_logps])


def mia_min_k_plus_plus(
    token_logps: Sequence[np.ndarray], mus: Sequence[np.ndarray], variances: Sequence[np.ndarray], k: float = MIN_K
) -> np.ndarray:
    """Min-K%++ (Zhang et al., 2024): tokens scored (log p - μ) / σ, μ and σ² the mean and variance of the
    log-probability under the next-token distribution; minus the mean of the lowest k fraction."""
    scores = []
    for logps, mu, var in zip(token_logps, mus, variances):
        z = (np.asarray(logps)[:-1] - np.asarray(mu)[:-1]) / np.sqrt(np.maximum(np.asarray(var)[:-1], 1e-6))
        scores.append(_lowest_fraction_mean(z, k))
    return np.array(scores)


def mia_reference(model_mean_logps: np.ndarray, reference_mean_logps: np.ndarray) -> np.ndarray:
    """Reference attack (Carlini et al., 2021): the model's mean token loss minus a reference model's (the retain
    model's)."""
    return mia_loss(model_mean_logps) - mia_loss(reference_mean_logps)


def mia_auc(forget_scores: np.ndarray, holdout_scores: np.ndarray) -> float:
    """ROC AUC of telling forget (members) from holdout (non-members) apart; 1 when the forget data is much more likely
    than the holdout data, 0.5 when indistinguishable (open-unlearning's convention)."""
    labels = np.r_[np.zeros(len(forget_scores)), np.ones(len(holdout_scores))]
    return float(roc_auc_score(labels, np.r_[forget_scores, holdout_scores]))


def privleak(model_auc: float, retain_model_auc: float) -> float:
    """MUSE's PrivLeak: 100·(s − r)/r with s = 1 − AUC of the evaluated model and r = 1 − AUC of the retain model;
    0 is ideal, large negative means the forget data still stands out (under-unlearning)."""
    score, reference = 1 - model_auc, 1 - retain_model_auc
    return float((score - reference) / (reference + EPS) * 100)


def tug_of_war(model_recall: Mapping[str, float], retain_model_recall: Mapping[str, float]) -> float:
    """Tug-of-War (ToW; Zhao et al., "What makes unlearning hard and what to do about it", NeurIPS 2024, arXiv
    2406.01257): Π over forget, retain and test sets of (1 − |A(model) − A(retrained model)|); 1 when the model
    performs exactly as the model retrained without the forget set does everywhere. ToW's A is accuracy; DareU (arXiv
    2605.30919) applies it to language models with A the mean ROUGE-L recall, as here, and the holdout split (authors
    neither model saw) plays ToW's test set, the retain model the retrained one."""
    return float(np.prod([1 - abs(model_recall[s] - retain_model_recall[s]) for s in ("forget", "retain", "holdout")]))
