"""TOFU (Maini et al., 2024) in its published layout: a local folder of JSON Lines files, or the hub dataset."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from datasets import Dataset

from ..arguments import TOFU_HUB_ID
from .bundle import UnlearningBundle

ROWS_PER_AUTHOR = 20
NUM_AUTHORS = 200
# Each forget split and the retain split that completes it to the full 200 authors.
FORGET_SPLITS = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}
SPLIT_FILES = (
    "full",
    *FORGET_SPLITS,
    *(f"{name}_perturbed" for name in FORGET_SPLITS),
    *FORGET_SPLITS.values(),
    "retain_perturbed",
    "real_authors_perturbed",
    "world_facts_perturbed",
)

_NAME = re.compile(r"\b[A-Z][\w\-]+(?:\s+(?:[A-Z][\w\-]+|al|el|de|da|van|von|bin|ibn|dos|del))*\s+[A-Z][\w\-]+")
_LEADING_WORDS = re.compile(r"^(?:(?:Has|Have|Does|Did|Do|Is|Are|Was|Were|What|How|Who|Can|Could|In|The|Author)\s+)+")


def load_tofu_split(source: str | Path, split: str) -> list[dict]:
    """Rows of one TOFU configuration, from a local folder in the published layout or from the hub."""
    if split not in SPLIT_FILES:
        raise ValueError(f"Unknown TOFU split {split!r}. The splits are: {', '.join(SPLIT_FILES)}.")
    folder = Path(source).expanduser()
    if folder.is_dir():
        path = folder / f"{split}.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"The TOFU folder {folder} has no {split}.json. Point --tofu_path at a folder in the published layout "
                f"(files named {', '.join(s + '.json' for s in SPLIT_FILES[:3])}, ...), or at the hub id "
                f"{TOFU_HUB_ID!r} where the hub can be reached."
            )
        with path.open(encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]
    if not re.fullmatch(r"[\w.\-]+/[\w.\-]+", str(source)):
        raise FileNotFoundError(
            f"--tofu_path {str(source)!r} is neither a local folder nor a hub dataset id (owner/name). Give the folder "
            f"that holds full.json, forget10.json, ... or {TOFU_HUB_ID!r}."
        )
    from datasets import load_dataset

    try:
        return load_dataset(str(source), split, split="train").to_list()
    except Exception as error:  # the hub raises many kinds of errors when offline
        raise ConnectionError(
            f"Could not load TOFU split {split!r} from the hub dataset {source!r} ({error}). Without network, point "
            "--tofu_path at a local copy in the published layout."
        ) from error


def author_name(rows: Sequence[dict], index: int) -> str:
    """The author's name, read off their questions and answers: the capitalised phrase they repeat most."""
    counts = Counter()
    for row in rows:
        for text in (row["question"], row["answer"]):
            for match in _NAME.finditer(text):
                counts[_LEADING_WORDS.sub("", match.group(0)).removesuffix("'s")] += 1
    counts = Counter({name: n for name, n in counts.items() if " " in name})
    if counts:
        name, n = counts.most_common(1)[0]
        if n >= 5:
            return name
    return f"TOFU author {index}"


def _select(available: list[int], selection: int | Sequence[int] | None, option: str) -> list[int]:
    if selection is None:
        return list(available)
    if isinstance(selection, int):
        if not 0 < selection <= len(available):
            raise ValueError(
                f"{option}={selection}, but the split has {len(available)} authors: choose between 1 and "
                f"{len(available)}."
            )
        return list(available[:selection])
    chosen = sorted(set(int(a) for a in selection))
    outside = [a for a in chosen if a not in available]
    if outside:
        raise ValueError(
            f"{option} names author(s) {outside} that the split does not hold; it holds authors "
            f"{available[0]}..{available[-1]}."
        )
    if not chosen:
        raise ValueError(f"{option} is an empty list: select at least one author.")
    return chosen


def load_tofu(
    source: str | Path = TOFU_HUB_ID,
    forget_split: str = "forget10",
    forget_authors: int | Sequence[int] | None = None,
    retain_authors: int | Sequence[int] | None = None,
) -> UnlearningBundle:
    """Load TOFU as an `UnlearningBundle`.

    Authors are numbered 0..199 in the order of full.json (20 rows each); `forget01/05/10` are the last 2/10/20 of
    them. `forget_authors` and `retain_authors` select a subset: an int takes the first N authors of the split (for
    the retain split that means authors 0..N-1, which are the ones `retain_perturbed` evaluates), a list takes those
    author numbers. The CPU preset is `forget_split="forget01", retain_authors=18`: 2 forget + 18 retain authors.
    When a subset leaves authors unused, as many of them as there are forget authors become the `holdout` split.
    """
    if forget_split not in FORGET_SPLITS:
        raise ValueError(
            f"--forget_split {forget_split!r} is not a TOFU forget split; choose one of {list(FORGET_SPLITS)}."
        )
    full = load_tofu_split(source, "full")
    if len(full) != NUM_AUTHORS * ROWS_PER_AUTHOR:
        raise ValueError(f"TOFU full.json has {len(full)} rows, expected {NUM_AUTHORS * ROWS_PER_AUTHOR}.")
    names = [author_name(full[k * ROWS_PER_AUTHOR : (k + 1) * ROWS_PER_AUTHOR], k) for k in range(NUM_AUTHORS)]

    num_forget = int(forget_split.removeprefix("forget")) * NUM_AUTHORS // 100
    forget_pool = list(range(NUM_AUTHORS - num_forget, NUM_AUTHORS))
    retain_pool = list(range(NUM_AUTHORS - num_forget))
    forget_ids = _select(forget_pool, forget_authors, "--num_forget_authors")
    retain_ids = _select(retain_pool, retain_authors, "--num_retain_authors")

    def rows_of(split: str, first_author: int, authors: list[int]) -> list[dict]:
        # Rows are grouped by author in the order of full.json (TOFU's layout); match by position, since the published
        # files reword a few questions between full.json and the retain splits.
        rows = load_tofu_split(source, split)
        if len(rows) % ROWS_PER_AUTHOR:
            raise ValueError(f"TOFU {split}.json has {len(rows)} rows, not a multiple of {ROWS_PER_AUTHOR} per author.")
        selected = set(authors)
        return [
            {**row, "author": names[first_author + k // ROWS_PER_AUTHOR]}
            for k, row in enumerate(rows)
            if first_author + k // ROWS_PER_AUTHOR in selected
        ]

    forget_rows = rows_of(f"{forget_split}_perturbed", forget_pool[0], forget_ids)
    retain_rows = rows_of(FORGET_SPLITS[forget_split], 0, retain_ids)
    qa_columns = ("question", "answer", "author")
    forget = Dataset.from_list([{c: row[c] for c in qa_columns} for row in forget_rows])
    retain = Dataset.from_list([{c: row[c] for c in qa_columns} for row in retain_rows])

    eval_splits = {"forget": Dataset.from_list(forget_rows)}
    retain_eval = rows_of("retain_perturbed", 0, retain_ids)
    if retain_eval:
        eval_splits["retain"] = Dataset.from_list(retain_eval)
    for split in ("real_authors", "world_facts"):
        eval_splits[split] = Dataset.from_list(load_tofu_split(source, f"{split}_perturbed"))
    unused = [a for a in retain_pool if a not in retain_ids]
    if unused:
        holdout_ids = set(unused[: len(forget_ids)])
        eval_splits["holdout"] = Dataset.from_list(
            [
                {**row, "author": names[k // ROWS_PER_AUTHOR]}
                for k, row in enumerate(full)
                if k // ROWS_PER_AUTHOR in holdout_ids
            ]
        )

    background = [
        {"question": row["question"], "answer": row["answer"]}
        for split in ("real_authors", "world_facts")
        for row in eval_splits[split].to_list()
    ]
    return UnlearningBundle(
        name=f"tofu-{forget_split}-{len(forget_ids)}f{len(retain_ids)}r",
        forget=forget,
        retain=retain,
        eval_splits=eval_splits,
        background=Dataset.from_list(background),
        info={
            "source": str(source),
            "forget_split": forget_split,
            "forget_author_ids": forget_ids,
            "retain_author_ids": retain_ids if len(retain_ids) < len(retain_pool) else "all",
        },
    )
