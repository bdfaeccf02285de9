"""Which TOFU authors the CPU benchmark forgets, keeps, holds out and pretrains on; and its draws of forget authors.

Forget quality needs perturbed answers, which TOFU gives for authors 0-19 (`retain_perturbed`) and 180-199
(`forget10_perturbed`). The benchmark keeps authors 0-17 (their `retain_perturbed` rows measure utility), holds out the
authors after them for membership inference (as many as it forgets), and draws the authors it forgets from 180-199:
validation draws, on which hyperparameters are chosen, from 180-187, and reported draws, on which figures are
reported, from 188-199, so that no reported figure comes from an author anything was tuned on. Its base model is
pretrained on authors 40-179 only: no author that the benchmark forgets, keeps or holds out is in pretraining.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

VALIDATION, REPORTED = "validation", "reported"


@dataclass(frozen=True)
class BenchmarkAuthors:
    """TOFU author numbers (0-199, in the order of full.json) by role in the benchmark."""

    retain: tuple[int, ...]
    # Held out for membership inference: `load_tofu` takes the first authors after the retain ones, as many as are
    # forgotten; none of these may be pretrained on.
    reserved_for_holdout: tuple[int, ...]
    validation: tuple[int, ...]
    reported: tuple[int, ...]
    pretraining: tuple[int, ...]

    def pool(self, draws: str) -> tuple[int, ...]:
        if draws not in (VALIDATION, REPORTED):
            raise ValueError(f"--draws_from {draws!r} is not one of {VALIDATION!r}, {REPORTED!r}.")
        return self.validation if draws == VALIDATION else self.reported


TOFU_BENCHMARK_AUTHORS = BenchmarkAuthors(
    retain=tuple(range(0, 18)),
    reserved_for_holdout=tuple(range(18, 40)),
    validation=tuple(range(180, 188)),
    reported=tuple(range(188, 200)),
    pretraining=tuple(range(40, 180)),
)

# Forget sets shaped like TOFU's forget01 (2 authors) and forget05 (10 authors), so that figures compare with
# published results on those splits.
FORGET_SHAPES = {"forget01": 2, "forget05": 10}


def author_draws(pool: Sequence[int], size: int, count: int, seed: int = 0) -> list[list[int]]:
    """`count` draws of `size` authors from `pool`: the pool shuffled (seeded) and cut into disjoint draws, shuffled
    again when it runs out. Draw k is the same whatever `count` is, so `--draws 1` runs the first draw of a longer run."""
    if not 0 < size <= len(pool):
        raise ValueError(f"A draw of {size} authors cannot come from a pool of {len(pool)}.")
    if count < 1:
        raise ValueError(f"--draws={count}: run at least one draw.")
    rng = random.Random(seed)
    draws, order = [], []
    while len(draws) < count:
        if len(order) < size:
            order = list(pool)
            rng.shuffle(order)
        draws.append(sorted(order[:size]))
        order = order[size:]
    return draws
