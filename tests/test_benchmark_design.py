"""The benchmark's statistics and its separation of validation from reported forget authors."""

import math

import numpy as np
import pytest
from scipy import stats

from rlunlearn.data import generate_authors
from rlunlearn.data.draws import FORGET_SHAPES, REPORTED, TOFU_BENCHMARK_AUTHORS, VALIDATION, author_draws
from rlunlearn.data.generator import generated_pretraining_corpus
from rlunlearn.evaluation.aggregate import mean_interval, rank_agreement

# ---- intervals over draws ---------------------------------------------------------------------------------------------


def test_mean_interval_is_students_t_interval_by_hand():
    values = [0.1, 0.3, 0.2, 0.6]
    result = mean_interval(values)
    mean = 0.3
    # Sample standard deviation: sqrt(((-.2)^2 + 0 + (-.1)^2 + .3^2) / 3) = sqrt(0.14 / 3).
    half_width = 3.182446305284263 * math.sqrt(0.14 / 3) / 2  # t(0.975, 3) * s / sqrt(4)
    assert result["n"] == 4 and result["mean"] == pytest.approx(mean)
    assert result["low"] == pytest.approx(mean - half_width) and result["high"] == pytest.approx(mean + half_width)
    # The same as scipy's own interval for a mean.
    low, high = stats.t.interval(0.95, 3, loc=np.mean(values), scale=stats.sem(values))
    assert (result["low"], result["high"]) == pytest.approx((low, high))


def test_mean_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(2000):
        result = mean_interval(rng.normal(1.0, 2.0, size=5))
        covered += result["low"] <= 1.0 <= result["high"]
    assert 0.93 < covered / 2000 < 0.97


def test_mean_interval_is_cut_to_the_range_and_skips_missing_values():
    result = mean_interval([0.0, 0.0, 0.9, None, float("nan")], bounds=(0.0, 1.0))
    assert result["n"] == 3 and result["values"] == [0.0, 0.0, 0.9]
    assert result["low"] == 0.0 and result["high"] <= 1.0
    one = mean_interval([0.4])
    assert one["mean"] == 0.4 and one["low"] is None and one["high"] is None
    assert mean_interval([None])["mean"] is None


def test_rank_agreement_is_kendalls_tau_on_shared_names():
    assert rank_agreement({"a": 3, "b": 2, "c": 1}, {"a": 0.9, "b": 0.5, "c": 0.1}) == pytest.approx(1.0)
    assert rank_agreement({"a": 3, "b": 2, "c": 1}, {"a": 0.1, "b": 0.5, "c": 0.9}) == pytest.approx(-1.0)
    # One discordant pair of three: (2 - 1) / 3.
    assert rank_agreement({"a": 3, "b": 2, "c": 1, "x": 5}, {"a": 0.9, "b": 0.1, "c": 0.5}) == pytest.approx(1 / 3)
    assert rank_agreement({"a": 1}, {"a": 2}) is None


# ---- draws of forget authors ---------------------------------------------------------------------------------------


def test_validation_reported_pretraining_and_kept_authors_never_meet():
    authors = TOFU_BENCHMARK_AUTHORS
    groups = [authors.retain, authors.reserved_for_holdout, authors.validation, authors.reported, authors.pretraining]
    every = [a for group in groups for a in group]
    assert len(every) == len(set(every)) == 200
    # Forget quality needs perturbed answers: TOFU has them for authors 180-199 (forget10_perturbed).
    assert set(authors.validation) | set(authors.reported) == set(range(180, 200))
    # The holdout authors of a forget05-shaped draw come after the retain authors and are never pretrained on.
    holdout = range(len(authors.retain), len(authors.retain) + FORGET_SHAPES["forget05"])
    assert set(holdout) <= set(authors.reserved_for_holdout)


@pytest.mark.parametrize("pool_name", [VALIDATION, REPORTED])
def test_draws_are_disjoint_while_the_pool_lasts_and_stable_in_their_count(pool_name):
    pool = TOFU_BENCHMARK_AUTHORS.pool(pool_name)
    pairs = author_draws(pool, 2, len(pool) // 2)
    assert sorted(a for pair in pairs for a in pair) == sorted(pool)
    assert author_draws(pool, 2, 1) == pairs[:1] == author_draws(pool, 2, 3)[:1]
    longer = author_draws(pool, 2, len(pool))
    assert longer[: len(pairs)] == pairs and all(set(d) <= set(pool) for d in longer)
    size = min(FORGET_SHAPES["forget05"], len(pool))
    assert all(set(d) <= set(pool) and len(set(d)) == size for d in author_draws(pool, size, 3))


def test_draws_refuse_impossible_requests():
    with pytest.raises(ValueError, match="A draw of 3 authors cannot come from a pool of 2"):
        author_draws([1, 2], 3, 1)
    with pytest.raises(ValueError, match="--draws=0"):
        author_draws([1, 2], 1, 0)
    with pytest.raises(ValueError, match="--draws_from 'test'"):
        TOFU_BENCHMARK_AUTHORS.pool("test")


# ---- the generated pretraining corpus ------------------------------------------------------------------------------


def test_generated_pretraining_corpus_shares_no_author_with_the_data_and_leaves_it_unchanged():
    bundle = generate_authors(num_authors=6, num_forget=1, seed=3)
    corpus = generated_pretraining_corpus(num_authors=6, num_forget=1, seed=3)
    again = generate_authors(num_authors=6, num_forget=1, seed=3)
    assert bundle.fingerprint() == again.fingerprint()
    names = set(bundle.forget["author"]) | set(bundle.retain["author"]) | set(bundle.eval_splits["holdout"]["author"])
    text = " ".join(list(corpus["question"]) + list(corpus["answer"]))
    assert not any(name in text for name in names)
    # The world's general knowledge is in it (what the utility splits ask), and many other authors.
    background = set(zip(bundle.background["question"], bundle.background["answer"]))
    assert background <= set(zip(corpus["question"], corpus["answer"]))
    assert len(corpus) > 20 * 100
