"""The forget/retain bundle: everything one unlearning task needs, independent of where the data came from."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field

from datasets import Dataset

logger = logging.getLogger(__name__)

# Evaluation split names, as in TOFU: the forget and retain questions with paraphrased and perturbed answers, and
# general knowledge the model must keep (real authors, world facts). `holdout` holds authors neither model saw,
# for membership inference.
EVAL_SPLITS = ("forget", "retain", "real_authors", "world_facts", "holdout")

QA_COLUMNS = ("question", "answer")


@dataclass
class UnlearningBundle:
    """Forget set, retain set and evaluation splits of one unlearning task.

    Every row of `forget` and `retain` has `question`, `answer` and `author` (the owner of the fact: the unit that is
    forgotten). Evaluation splits carry `paraphrased_answer`, `perturbed_answer` (a list) and `paraphrased_question`
    where the source has them. `background` is general knowledge (real authors, world facts) that a model trained from
    scratch must learn along with the authors, so that its utility can be measured; a pretrained checkpoint already
    knows it.
    """

    name: str
    forget: Dataset
    retain: Dataset
    eval_splits: dict[str, Dataset] = field(default_factory=dict)
    background: Dataset | None = None
    # The source's own words for things a report should name (e.g. which TOFU file, which generator seed).
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        for split_name, split in (("forget", self.forget), ("retain", self.retain)):
            missing = [c for c in (*QA_COLUMNS, "author") if c not in split.column_names]
            if missing:
                raise ValueError(
                    f"The {split_name} set lacks the column(s) {missing}; it has {split.column_names}. Each row needs "
                    "`question`, `answer` and `author` (who the fact belongs to)."
                )
        if len(self.forget) == 0:
            raise ValueError(
                "The forget set is empty: there is nothing to unlearn. Select at least one forget author "
                "(--num_forget_authors) or give a forget split with rows."
            )
        overlap = self.overlap()
        if overlap:
            # Unlearning and keeping the same answer pull against each other: say so, and record it in the reports.
            logger.warning(
                "%d question(s) are in both the forget and the retain set, e.g. %r; they are listed in the report "
                "under bundle.forget_retain_overlap.",
                len(overlap),
                overlap[0],
            )
            self.info["forget_retain_overlap"] = overlap
        unknown = sorted(set(self.eval_splits) - set(EVAL_SPLITS))
        if unknown:
            raise ValueError(f"Unknown evaluation split(s) {unknown}; the known ones are {list(EVAL_SPLITS)}.")

    @property
    def forget_authors(self) -> list[str]:
        return sorted(set(self.forget["author"]))

    @property
    def retain_authors(self) -> list[str]:
        return sorted(set(self.retain["author"]))

    def missing_eval_splits(self) -> list[str]:
        """Evaluation splits this bundle does not have: a report names them instead of silently dropping them."""
        return [name for name in EVAL_SPLITS if name not in self.eval_splits]

    def overlap(self) -> list[str]:
        """Questions that appear in both the forget and the retain set."""
        return sorted(set(self.forget["question"]) & set(self.retain["question"]))

    def corpus(self) -> list[str]:
        """Every text of the bundle, e.g. to train a tokenizer that covers all of it."""
        texts = []
        for split in (self.forget, self.retain, *self.eval_splits.values(), self.background):
            if split is None:
                continue
            for column in ("question", "answer", "paraphrased_answer", "paraphrased_question", "original_answer"):
                if column in split.column_names:
                    texts.extend(t for t in split[column] if t)
            if "perturbed_answer" in split.column_names:
                texts.extend(t for answers in split["perturbed_answer"] for t in answers)
        return texts

    def fingerprint(self) -> str:
        """A hash of the bundle's content: equal bundles give equal fingerprints, across processes and machines."""
        digest = hashlib.sha256()
        splits = {"forget": self.forget, "retain": self.retain, **{f"eval/{k}": v for k, v in self.eval_splits.items()}}
        if self.background is not None:
            splits["background"] = self.background
        for name in sorted(splits):
            digest.update(name.encode())
            digest.update(json.dumps(splits[name].to_list(), sort_keys=True, ensure_ascii=False).encode())
        return digest.hexdigest()

    def summary(self) -> dict:
        return {
            "name": self.name,
            "forget": len(self.forget),
            "retain": len(self.retain),
            "forget_authors": self.forget_authors,
            "num_retain_authors": len(self.retain_authors),
            "eval_splits": {name: len(split) for name, split in self.eval_splits.items()},
            "missing_eval_splits": self.missing_eval_splits(),
            "background": 0 if self.background is None else len(self.background),
            **self.info,
        }
