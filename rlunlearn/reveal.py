"""What Reveal-and-Release needs beyond the data bundle: the named target, the instructions that ask about it, the
reward that says how much an answer reveals, and optional seed forget data. By default nothing here reads the forget
set's questions or answers: only the forget authors' names (the targets) and the retain authors' names (contrasts)."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset
from trl import ModelConfig

from rlunlearn.rewards import ClassifierReward, load_reward
from rlunlearn.trainers import TargetRelevance

from .attribution import attributor_for_run
from .data import REVEAL_INSTRUCTIONS, UnlearningBundle, reveal_instructions, sft_dataset


@dataclass
class RevealArguments:
    """The forget target of Reveal-and-Release and how the model is made to reveal it."""

    target: list[str] = field(
        default_factory=list,
        metadata={
            "help": 'The forget target(s), by name only (e.g. "Basil Mahfouz Al-Kuwaiti"); default: the names of the '
            "data's forget authors. Their facts are not used unless --seed_file gives them."
        },
    )
    target_kind: str = field(
        default="person",
        metadata={"help": "Which built-in instructions ask about the target.", "choices": sorted(REVEAL_INSTRUCTIONS)},
    )
    instructions_file: str | None = field(
        default=None,
        metadata={
            "help": "Your own instructions instead of the built-in ones: one a line, {target} where the name goes."
        },
    )
    seed_file: str | None = field(
        default=None,
        metadata={
            "help": "Seed forget data joined to every round's forget set: a JSON or JSON-lines file of question/answer "
            "rows (e.g. TOFU's forget01.json). Default: none; the forget set is what the model reveals."
        },
    )
    reveal_reward: str = field(
        default="relevance",
        metadata={
            "help": "How much an answer reveals the target: `relevance` (the model's own judgement: how much likelier "
            "it finds the answer about the target than about the contrast names; reads no forget data), "
            "`attribution` (an attribution classifier's probability of the target: trained on the data bundle, forget "
            "answers included), a registered reward, a module:attribute import path, or a classifier folder[#label]."
        },
    )
    contrast_names: list[str] = field(
        default_factory=list,
        metadata={
            "help": "`relevance`: names of the target's kind to compare it with; default: up to --num_contrast_names "
            "retain authors (--target_kind person). Required for other kinds."
        },
    )
    num_contrast_names: int = field(
        default=16, metadata={"help": "`relevance`: retain authors drawn (with the run's seed) as default contrasts."}
    )
    attributor: str | None = field(
        default=None,
        metadata={
            "help": "--reveal_reward attribution: folder of the attribution classifier (`rlunlearn train-attributor`, "
            "one label per author); default: train one from the model being unlearned, on the data bundle."
        },
    )

    def targets(self, bundle: UnlearningBundle) -> list[str]:
        return list(self.target) or bundle.forget_authors

    def contrasts(self, bundle: UnlearningBundle, seed: int) -> list[str]:
        """The names `relevance` compares the target with: --contrast_names, or retain authors drawn with `seed`."""
        if self.contrast_names:
            return list(self.contrast_names)
        if self.target_kind != "person":
            raise ValueError(
                f"--reveal_reward relevance compares the target with other {self.target_kind} names: give "
                "--contrast_names (e.g. other styles than the target), or another --reveal_reward."
            )
        if self.num_contrast_names < 1:
            raise ValueError(f"--num_contrast_names is {self.num_contrast_names}; draw at least one retain author.")
        names = [name for name in bundle.retain_authors if name not in self.targets(bundle)]
        return sorted(random.Random(seed).sample(names, min(self.num_contrast_names, len(names))))


# What each error about --seed_file asks for.
SEED_FILE_ROWS = "give question/answer rows, as a JSON list or one JSON object a line"


def seed_dataset(path: str | Path, fmt) -> Dataset:
    """prompt/completion rows from a file of question/answer rows: a JSON list, or JSON lines (one object a line, as
    TOFU's files are)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"--seed_file {str(path)!r} does not exist: give a JSON file of question/answer rows.")
    text = path.read_text(encoding="utf-8")
    try:
        if text.lstrip().startswith("["):
            rows = json.loads(text)
        else:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as error:
        raise ValueError(
            f"--seed_file {str(path)!r} is neither a JSON list nor JSON lines ({error.msg}): {SEED_FILE_ROWS}."
        ) from None
    if not rows:
        raise ValueError(f"--seed_file {str(path)!r} is empty: {SEED_FILE_ROWS}.")
    missing = sorted({c for row in rows for c in ("question", "answer") if not isinstance(row, dict) or c not in row})
    if missing:
        raise ValueError(f"--seed_file {str(path)!r}: a row lacks the field(s) {missing}; give question/answer rows.")
    return sft_dataset(Dataset.from_list(rows), fmt)


def reveal_release_inputs(
    reveal_args: RevealArguments,
    bundle: UnlearningBundle,
    data_args,
    model_args: ModelConfig,
    output_dir: str,
    seed: int,
) -> dict:
    """The trainer's keyword arguments beyond the model and config: `reward_func`, `instructions` (formatted as
    prompts), `template_answers` (for FLAT) and `train_dataset` (the seed data, or None). The default reward,
    `relevance`, reads the targets' and the contrast names only; `attribution` trains an attribution classifier from
    `model_args` on the bundle into `<output_dir>/attributor` when none is given."""
    fmt = data_args.prompt_format()
    targets = reveal_args.targets(bundle)
    if reveal_args.attributor is not None and reveal_args.reveal_reward != "attribution":
        raise ValueError(
            f"--attributor is read by --reveal_reward attribution only, not {reveal_args.reveal_reward!r}: drop it, or "
            "give --reveal_reward attribution."
        )
    if reveal_args.reveal_reward == "relevance":
        reward = TargetRelevance(targets, reveal_args.contrasts(bundle, seed))
    elif reveal_args.reveal_reward == "attribution":
        classifier = attributor_for_run(reveal_args.attributor, bundle, data_args, model_args, output_dir, seed)
        reward = ClassifierReward(classifier, targets, scope="completion", name="reveal")
    else:
        reward = load_reward(reveal_args.reveal_reward)
    instructions = reveal_instructions(targets, reveal_args.target_kind, reveal_args.instructions_file)
    return {
        "reward_func": reward,
        "instructions": [fmt.prompt(instruction) for instruction in instructions],
        "template_answers": data_args.refusals(),
        "train_dataset": seed_dataset(reveal_args.seed_file, fmt) if reveal_args.seed_file else None,
    }
