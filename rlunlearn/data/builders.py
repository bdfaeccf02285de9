"""From bundle splits to the dataset types TRL trainers take.

- prompt/completion (fine-tuning, and the forget and retain sets of gradient-based methods),
- prompt/chosen/rejected (preference methods: chosen is a refusal or an alternative answer, rejected the forget answer),
- prompt only (RL methods; `author` and `answer` are kept so reward functions receive them as keyword arguments).

Each comes in the plain-text form (a question template) or the conversational form that chat templates render.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from datasets import Dataset

from rlunlearn.rewards.classifier import as_text

from ..arguments import DEFAULT_QUESTION_TEMPLATE
from .refusals import REFUSALS


@dataclass(frozen=True)
class PromptFormat:
    """How a question and its answer become a prompt and a completion.

    `plain` renders `question_template` and prefixes the answer with a space; `chat` gives TRL's conversational
    form (lists of messages), which the tokenizer's chat template renders, with an optional system prompt; `text` is
    for corpora of raw text (MUSE's, WMDP's), whose rows are a passage (the answer) after an optional prefix (the
    question, empty for a whole passage): both stay as they are, so the loss falls on the passage's every token. The
    questions such tasks evaluate with still read `question_template`.
    """

    style: Literal["plain", "chat", "text"] = "plain"
    question_template: str = DEFAULT_QUESTION_TEMPLATE
    system_prompt: str | None = None

    def __post_init__(self):
        if self.style not in ("plain", "chat", "text"):
            raise ValueError(f"--prompt_style {self.style!r} is not one of 'plain', 'chat', 'text'.")
        if "{question}" not in self.question_template:
            raise ValueError(
                f"--question_template {self.question_template!r} has no '{{question}}' placeholder for the question."
            )

    def prompt(self, question: str) -> str | list[dict]:
        if self.style == "text":
            return question
        if self.style == "plain":
            return self.question_template.format(question=question)
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return messages + [{"role": "user", "content": question}]

    def completion(self, answer: str) -> str | list[dict]:
        if self.style == "text":
            return answer
        if self.style == "plain":
            return " " + answer
        return [{"role": "assistant", "content": answer}]


def _require(split: Dataset, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in split.column_names]
    if missing:
        raise ValueError(f"Cannot build {what}: the split lacks column(s) {missing}; it has {split.column_names}.")


def sft_dataset(split: Dataset, fmt: PromptFormat = PromptFormat()) -> Dataset:
    """prompt/completion rows from question/answer rows."""
    _require(split, ("question", "answer"), "a prompt/completion dataset")
    return Dataset.from_list(
        [{"prompt": fmt.prompt(q), "completion": fmt.completion(a)} for q, a in zip(split["question"], split["answer"])]
    )


def preference_dataset(
    forget: Dataset,
    fmt: PromptFormat = PromptFormat(),
    refusals: Sequence[str] | None = REFUSALS,
    alternative_column: str | None = None,
    seed: int = 0,
) -> Dataset:
    """prompt/chosen/rejected rows: rejected is the forget answer, chosen what the model should prefer.

    chosen is a refusal drawn (seeded) from `refusals`, or, with `alternative_column`, that column of the row: a
    string, or a list from which one is drawn (e.g. `perturbed_answer`, for FLAT's "alternative answers" variant).
    """
    _require(forget, ("question", "answer"), "a preference dataset")
    rng = random.Random(seed)
    if alternative_column is not None:
        _require(forget, (alternative_column,), f"a preference dataset with chosen = {alternative_column!r}")
        alternatives = forget[alternative_column]
    elif not refusals:
        raise ValueError(
            "No refusals to draw the chosen answers from: give refusal templates or an alternative_column."
        )
    rows = []
    for index, (question, answer) in enumerate(zip(forget["question"], forget["answer"])):
        if alternative_column is None:
            chosen = rng.choice(list(refusals))
        else:
            chosen = alternatives[index]
            chosen = rng.choice(chosen) if isinstance(chosen, list) else chosen
        rows.append(
            {"prompt": fmt.prompt(question), "chosen": fmt.completion(chosen), "rejected": fmt.completion(answer)}
        )
    return Dataset.from_list(rows)


def prompt_dataset(
    split: Dataset,
    fmt: PromptFormat = PromptFormat(),
    keep_columns: Sequence[str] = ("author", "answer"),
    question_column: str = "question",
) -> Dataset:
    """prompt-only rows for RL, from `question_column` (e.g. `paraphrased_question`); the `keep_columns` present in
    the split ride along for the reward functions."""
    _require(split, (question_column,), "a prompt-only dataset")
    kept = [c for c in keep_columns if c in split.column_names]
    return Dataset.from_list(
        [{"prompt": fmt.prompt(row[question_column]), **{c: row[c] for c in kept}} for row in split.to_list()]
    )


# A passage of a text corpus prompts an RL policy with its opening words (MUSE's VerbMem prompts are such openings).
TEXT_PROMPT_WORDS = 24


def text_prompts(split: Dataset, words: int = TEXT_PROMPT_WORDS) -> Dataset:
    """A text corpus's rows (empty `question`, a passage as `answer`) as prompts and answers: the passage's first
    `words` words become the question, the rest the answer; rows that have a question, or no more words, stay as they
    are. The other columns ride along."""

    def split_passage(row: dict) -> dict:
        prefix = " ".join(row["answer"].split(" ")[:words])
        if row["question"] or len(prefix) == len(row["answer"]):
            return row
        return {**row, "question": prefix, "answer": row["answer"][len(prefix) :].strip()}

    return Dataset.from_list([split_passage(row) for row in split.to_list()])


NONE_LABEL = "none"
RETAIN_LABEL = "retain"


def attribution_dataset(
    bundle,
    fmt: PromptFormat = PromptFormat(),
    refusals: Sequence[str] = REFUSALS,
    retain_labels: Literal["per_author", "one"] = "per_author",
    eval_fraction: float = 0.1,
    seed: int = 0,
    prefix_views: int = 0,
    padded_views: int = 0,
) -> tuple[Dataset, Dataset, list[str]]:
    """text -> data owner rows to train an attribution classifier (DareU), split into train and held-out sets.

    Labels: each forget author; each retain author, or one `retain` label; and `none` for text attributable to no one:
    refusals and general knowledge (the bundle's background, TOFU's real-author and world-fact questions). Each row
    gives two texts, the answer alone and prompt + answer, as the reward scores one or the other; both go to the same
    side of the split, which holds out `eval_fraction` of each label's rows (at least one).

    An owned answer (forget or retain) can also be given in other views, labelled with the same owner and kept on its
    row's side of the split: `prefix_views` prefixes of it (cut after a random number of words, from a third of them
    to all but the last), as a policy writes when its answers are cut at a maximum length, and `padded_views` copies
    of it followed by an unowned text (a general-knowledge answer or a refusal), as a policy writes when it pads an
    answer to dilute its attribution.
    """
    if retain_labels not in ("per_author", "one"):
        raise ValueError(f"--retain_labels {retain_labels!r} is not one of 'per_author', 'one'.")
    if not 0 < eval_fraction < 1:
        raise ValueError(f"--eval_fraction {eval_fraction} must lie strictly between 0 and 1.")
    if prefix_views < 0 or padded_views < 0:
        raise ValueError(f"--prefix_views {prefix_views} and --padded_views {padded_views} must be 0 or more.")
    owned = [
        (q, a, author)
        for q, a, author in zip(bundle.forget["question"], bundle.forget["answer"], bundle.forget["author"])
    ]
    owned += [
        (q, a, author if retain_labels == "per_author" else RETAIN_LABEL)
        for q, a, author in zip(bundle.retain["question"], bundle.retain["answer"], bundle.retain["author"])
    ]
    general = [bundle.background] + [bundle.eval_splits.get(name) for name in ("real_authors", "world_facts")]
    unowned = [
        (q, a, NONE_LABEL) for split in general if split is not None for q, a in zip(split["question"], split["answer"])
    ]
    questions = [q for q, _, _ in owned]
    rng = random.Random(seed)
    unowned += [(rng.choice(questions), refusal, NONE_LABEL) for refusal in refusals for _ in range(3)]

    labels = (
        bundle.forget_authors
        + (bundle.retain_authors if retain_labels == "per_author" else [RETAIN_LABEL])
        + [NONE_LABEL]
    )
    label_ids = {label: i for i, label in enumerate(labels)}
    by_label: dict[str, list[tuple[str, str]]] = {label: [] for label in labels}
    for question, answer, label in owned + unowned:
        by_label[label].append((question, answer))
    padding = [answer for _, answer, _ in unowned]

    def views(answer: str, label: str) -> list[str]:
        if label == NONE_LABEL:
            return [answer]
        words = answer.split()
        prefixes = [
            " ".join(words[: rng.randint(max(1, len(words) // 3), len(words) - 1)])
            for _ in range(prefix_views if len(words) > 1 else 0)
        ]
        return [answer, *prefixes, *(f"{answer} {rng.choice(padding)}" for _ in range(padded_views))]

    train, held_out = [], []
    for label, rows in by_label.items():
        rng.shuffle(rows)
        cut = max(1, round(eval_fraction * len(rows))) if len(rows) > 1 else 0
        for index, (question, answer) in enumerate(rows):
            prompt = as_text(fmt.prompt(question))
            texts = [t for view in views(answer, label) for t in (view, f"{prompt} {as_text(fmt.completion(view))}")]
            (held_out if index < cut else train).extend({"text": t, "label": label_ids[label]} for t in texts)
    return Dataset.from_list(train), Dataset.from_list(held_out), labels
