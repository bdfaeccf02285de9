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
# Each task's evaluation splits (its published benchmark's): the entities' (TOFU's) above; harmful answers (LLMU's
# setting): held-out harmful prompts with their harmful answers, and normal questions; hazardous knowledge (WMDP):
# multiple-choice questions on the hazard and on general knowledge (MMLU's layout); copyrighted text (MUSE):
# knowledge-memorisation questions on the forget and the retain text, verbatim-memorisation prefixes of the forget
# text, and text of the same source no model saw (privacy leakage).
TASK_EVAL_SPLITS = {
    "entities": EVAL_SPLITS,
    "harmful": ("harmful", "normal"),
    "wmdp": ("hazard_mc", "general_mc"),
    "muse": ("knowmem_forget", "knowmem_retain", "verbmem_forget", "forget_text", "holdout_text"),
}

QA_COLUMNS = ("question", "answer")


@dataclass
class UnlearningBundle:
    """Forget set, retain set and evaluation splits of one unlearning task.

    Every row of `forget` and `retain` has `question`, `answer` and `author` (the owner of the fact: the unit that is
    forgotten). Evaluation splits carry `paraphrased_answer`, `perturbed_answer` (a list) and `paraphrased_question`
    where the source has them. `background` is general knowledge (real authors, world facts) that a model trained from
    scratch must learn along with the authors, so that its utility can be measured; a pretrained checkpoint already
    knows it.

    `task` names what is forgotten, and so which evaluation splits (`TASK_EVAL_SPLITS`) and metrics apply: facts of
    entities (TOFU), harmful answers, hazardous knowledge (WMDP), copyrighted text (MUSE). On text (MUSE, WMDP's
    corpora) a row's `question` is empty and its `answer` is a passage. `target_only` holds what the target model
    learns of the forget domain beyond the forget set and the retain model never sees (the harmful answers to the
    held-out prompts, on which unlearning must generalise).
    """

    name: str
    forget: Dataset
    retain: Dataset
    eval_splits: dict[str, Dataset] = field(default_factory=dict)
    background: Dataset | None = None
    task: str = "entities"
    target_only: Dataset | None = None
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
        if self.task not in TASK_EVAL_SPLITS:
            raise ValueError(f"Unknown task {self.task!r}; the tasks are {list(TASK_EVAL_SPLITS)}.")
        unknown = sorted(set(self.eval_splits) - set(self.eval_split_names))
        if unknown:
            raise ValueError(
                f"Unknown evaluation split(s) {unknown} for the {self.task} task; its splits are "
                f"{list(self.eval_split_names)}."
            )

    @property
    def eval_split_names(self) -> tuple[str, ...]:
        """The evaluation splits of this bundle's task, in the order they are evaluated."""
        return TASK_EVAL_SPLITS[self.task]

    @property
    def forget_authors(self) -> list[str]:
        return sorted(set(self.forget["author"]))

    @property
    def retain_authors(self) -> list[str]:
        return sorted(set(self.retain["author"]))

    def missing_eval_splits(self) -> list[str]:
        """Evaluation splits this bundle does not have: a report names them instead of silently dropping them."""
        return [name for name in self.eval_split_names if name not in self.eval_splits]

    def overlap(self) -> list[str]:
        """Questions (passages, on text) that appear in both the forget and the retain set."""

        def keys(split: Dataset) -> set[str]:
            return {q or a for q, a in zip(split["question"], split["answer"])}

        return sorted(keys(self.forget) & keys(self.retain))

    def corpus(self) -> list[str]:
        """Every text of the bundle, e.g. to train a tokenizer that covers all of it."""
        texts = []
        for split in (self.forget, self.retain, *self.eval_splits.values(), self.background, self.target_only):
            if split is None:
                continue
            for column in (
                "question",
                "answer",
                "paraphrased_answer",
                "paraphrased_question",
                "original_answer",
                "text",
            ):
                if column in split.column_names:
                    texts.extend(t for t in split[column] if isinstance(t, str) and t)
            for column in ("perturbed_answer", "choices"):
                if column in split.column_names:
                    texts.extend(t for answers in split[column] for t in answers)
        return texts

    def fingerprint(self) -> str:
        """A hash of the bundle's content: equal bundles give equal fingerprints, across processes and machines."""
        digest = hashlib.sha256()
        splits = {"forget": self.forget, "retain": self.retain, **{f"eval/{k}": v for k, v in self.eval_splits.items()}}
        for name, split in (("background", self.background), ("target_only", self.target_only)):
            if split is not None:
                splits[name] = split
        for name in sorted(splits):
            digest.update(name.encode())
            digest.update(json.dumps(splits[name].to_list(), sort_keys=True, ensure_ascii=False).encode())
        return digest.hexdigest()

    def summary(self) -> dict:
        return {
            "name": self.name,
            "task": self.task,
            "forget": len(self.forget),
            "retain": len(self.retain),
            "forget_authors": self.forget_authors,
            "num_retain_authors": len(self.retain_authors),
            "eval_splits": {name: len(split) for name, split in self.eval_splits.items()},
            "missing_eval_splits": self.missing_eval_splits(),
            "background": 0 if self.background is None else len(self.background),
            **self.info,
        }
