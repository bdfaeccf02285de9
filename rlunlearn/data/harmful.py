"""Harmful answers to forget (LLMU's setting, Yao et al. 2023): PKU-SafeRLHF's harmful prompt/answer pairs, normal
questions to keep from TruthfulQA; or the offline stand-in, the invented world's hazardous recipes.

The bundle: `forget` holds harmful prompts with a harmful answer (author `harmful`), `retain` normal questions with
their answer (author `normal`); the `harmful` evaluation split holds harmful prompts unlearning never sees, the
`normal` split normal questions. The stand-in's harmful rows carry `secret`, the span of the answer that gives the
recipe away, which the rule judge `secret_span` flags, so its harmful rate is exact.
"""

from __future__ import annotations

from datasets import Dataset

from .bundle import UnlearningBundle
from .hazards import REQUESTS, harmful_answer, preparations, secret, world_and_background
from .published import is_hub_id, local_folder, read_file, read_hub

PKU_HUB_ID = "PKU-Alignment/PKU-SafeRLHF"
TRUTHFULQA_HUB_ID = "truthfulqa/truthful_qa"
PKU_COLUMNS = ("prompt", "response_0", "response_1", "is_response_0_safe", "is_response_1_safe")
# TruthfulQA's CSV (its repository's TruthfulQA.csv) and the hub's `generation` configuration name the columns apart.
TRUTHFULQA_CSV_COLUMNS = ("Question", "Best Answer")
TRUTHFULQA_HUB_COLUMNS = ("question", "best_answer")
# The share of TruthfulQA's questions kept as retain data; the rest are the normal evaluation questions.
NORMAL_TRAIN_FRACTION = 0.8
HARMFUL, NORMAL = "harmful", "normal"


def harmful_pairs(rows: list[dict]) -> list[dict]:
    """question/answer rows from PKU-SafeRLHF rows: each prompt with its first response labelled unsafe (prompts
    whose responses are both safe are skipped)."""
    pairs = []
    for row in rows:
        unsafe = [row[f"response_{i}"] for i in (0, 1) if not row[f"is_response_{i}_safe"]]
        if unsafe:
            pairs.append({"question": row["prompt"], "answer": unsafe[0], "author": HARMFUL})
    return pairs


def _pku(source: str, split: str) -> list[dict]:
    if is_hub_id(source):
        return read_hub(source, None, split, "--harmful_path", PKU_COLUMNS)
    expected = f"PKU-SafeRLHF's folder (train.jsonl, test.jsonl) or {PKU_HUB_ID!r}"
    return read_file(local_folder(source, "--harmful_path", expected), split, "--harmful_path", PKU_COLUMNS)


def _truthfulqa(source: str) -> list[dict]:
    if is_hub_id(source):
        rows = read_hub(source, "generation", "validation", "--normal_path", TRUTHFULQA_HUB_COLUMNS)
        return [{"question": r["question"], "answer": r["best_answer"]} for r in rows]
    folder = local_folder(source, "--normal_path", f"the folder of TruthfulQA.csv or {TRUTHFULQA_HUB_ID!r}")
    rows = read_file(folder, "TruthfulQA", "--normal_path", TRUTHFULQA_CSV_COLUMNS)
    return [{"question": r["Question"], "answer": r["Best Answer"]} for r in rows]


def load_harmful(harmful_path: str, normal_path: str, max_examples: int | None = None) -> UnlearningBundle:
    """The harmful-answers task on the published data: PKU-SafeRLHF's train split (forget) and test split (held-out
    harmful prompts), TruthfulQA's questions (the first 80% to keep, the rest to evaluate), each cut to
    `max_examples` rows when given."""
    if max_examples is not None and max_examples < 1:
        raise ValueError(f"--max_examples {max_examples}: give at least 1, or leave it unset for every row.")
    forget = harmful_pairs(_pku(harmful_path, "train"))[:max_examples]
    held_out = harmful_pairs(_pku(harmful_path, "test"))[:max_examples]
    normal = _truthfulqa(normal_path)
    cut = int(len(normal) * NORMAL_TRAIN_FRACTION)
    retain = [{**row, "author": NORMAL} for row in normal[:cut]][:max_examples]
    return UnlearningBundle(
        name="harmful-pku",
        forget=Dataset.from_list(forget),
        retain=Dataset.from_list(retain),
        eval_splits={"harmful": Dataset.from_list(held_out), "normal": Dataset.from_list(normal[cut:][:max_examples])},
        task="harmful",
        info={"source": "PKU-SafeRLHF + TruthfulQA", "harmful_path": harmful_path, "normal_path": normal_path},
    )


def generate_harmful(seed: int = 0, num_preparations: int = 40, num_held_out: int = 8) -> UnlearningBundle:
    """The offline stand-in: requests for the recipes of the world's hazardous preparations, answered with the recipe.

    The target model learns every preparation's recipe from three phrasings of the request; the forget set holds those
    of all but `num_held_out` preparations. The `harmful` split's column `group` says which of three groups a
    prompt is in: `forget`, a forget prompt itself; `rephrased`, a forget recipe asked in a fourth phrasing no model
    was trained on (does forgetting carry over to a new wording?); `held_out`, a held-out recipe in that phrasing
    (does it carry over to recipes unlearning never saw, which the target learned?). The last two are the held-out
    prompts of the harmful rate. The normal data are the world's general-knowledge questions. Deterministic in
    `seed`."""
    if not 0 < num_held_out < num_preparations:
        raise ValueError(
            f"--num_held_out {num_held_out} must be between 1 and the number of preparations - 1 ({num_preparations - 1})."
        )
    rng, world, general, teaching = world_and_background(seed)
    recipes = preparations(rng, world, num_preparations)

    def rows(preparation: dict, templates: list[str]) -> list[dict]:
        return [
            {
                "question": template.format(name=preparation["name"]),
                "answer": harmful_answer(preparation),
                "author": HARMFUL,
                "secret": secret(preparation),
            }
            for template in templates
        ]

    trained, unseen = REQUESTS[:-1], REQUESTS[-1:]
    forgotten, held_out = recipes[: num_preparations - num_held_out], recipes[num_preparations - num_held_out :]
    forget = [row for p in forgotten for row in rows(p, trained)]
    target_only = [row for p in held_out for row in rows(p, trained)]
    asked = [{**row, "group": "forget"} for p in forgotten for row in rows(p, trained[:1])]
    asked += [{**row, "group": "rephrased"} for p in forgotten for row in rows(p, unseen)]
    asked += [{**row, "group": "held_out"} for p in held_out for row in rows(p, unseen)]
    return UnlearningBundle(
        name=f"harmful-standin-seed{seed}",
        forget=Dataset.from_list(forget),
        retain=Dataset.from_list([{**row, "author": NORMAL} for row in teaching]),
        eval_splits={
            "harmful": Dataset.from_list(asked),
            "normal": Dataset.from_list([{"question": r["question"], "answer": r["answer"]} for r in general]),
        },
        task="harmful",
        target_only=Dataset.from_list(target_only),
        info={"source": "generated", "seed": seed},
    )
