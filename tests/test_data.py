import json

import pytest

from rlunlearn.data import (
    REFUSALS,
    PromptFormat,
    generate_authors,
    load_refusals,
    load_tofu,
    preference_dataset,
    prompt_dataset,
    sft_dataset,
)
from rlunlearn.data.generator import FACTS, NUM_PERTURBED

# ---- generator ----------------------------------------------------------------------------------------------------


def test_generator_is_deterministic_in_its_seed():
    assert generate_authors(6, 2, seed=3).fingerprint() == generate_authors(6, 2, seed=3).fingerprint()
    assert generate_authors(6, 2, seed=3).fingerprint() != generate_authors(6, 2, seed=4).fingerprint()


def test_generator_rows_carry_every_field_tofu_metrics_need():
    bundle = generate_authors(num_authors=5, num_forget=2, seed=1)
    assert len(bundle.forget_authors) == 2 and len(bundle.retain_authors) == 3
    assert len(bundle.forget) == 2 * len(FACTS) and len(bundle.retain) == 3 * len(FACTS) and len(FACTS) == 20
    assert not set(bundle.forget_authors) & set(bundle.retain_authors)
    holdout_authors = set(bundle.eval_splits["holdout"]["author"])
    assert len(holdout_authors) == 2 and not holdout_authors & (set(bundle.forget_authors) | set(bundle.retain_authors))
    for split in ("forget", "retain", "holdout"):
        for row in bundle.eval_splits[split]:
            assert row["fact"] in row["answer"] and row["fact"] in row["paraphrased_answer"]
            assert row["paraphrased_answer"] != row["answer"] and row["paraphrased_question"] != row["question"]
            assert len(row["perturbed_answer"]) == NUM_PERTURBED == len(set(row["perturbed_answer"]))
            # A perturbed answer is the paraphrase with the fact swapped for a wrong one.
            assert all(row["fact"] not in p or row["fact"] in row["author"] for p in row["perturbed_answer"])
            assert row["paraphrased_answer"] not in row["perturbed_answer"]
    # The forget split of the evaluation is the forget set, in the same order.
    assert bundle.eval_splits["forget"]["question"] == bundle.forget["question"]
    for split in ("real_authors", "world_facts"):
        rows = bundle.eval_splits[split]
        assert len(rows) > 0 and all(r["answer"] not in r["perturbed_answer"] for r in rows)
    # The background knowledge is taught in three phrasings, among them the evaluation's own question.
    assert len(bundle.background) == 3 * (
        len(bundle.eval_splits["real_authors"]) + len(bundle.eval_splits["world_facts"])
    )
    taught = set(zip(bundle.background["question"], bundle.background["answer"]))
    for split in ("real_authors", "world_facts"):
        assert set(zip(bundle.eval_splits[split]["question"], bundle.eval_splits[split]["answer"])) <= taught
    assert bundle.missing_eval_splits() == []


@pytest.mark.parametrize(
    ("num_authors", "num_forget", "message"), [(1, 1, "at least 2"), (5, 5, "between 1"), (5, 0, "between 1")]
)
def test_generator_rejects_impossible_splits(num_authors, num_forget, message):
    with pytest.raises(ValueError, match=message):
        generate_authors(num_authors, num_forget)


# ---- TOFU ---------------------------------------------------------------------------------------------------------


def test_tofu_full_splits_have_the_published_sizes(tofu_dir):
    for split, forget_rows, retain_rows in (("forget01", 40, 3960), ("forget05", 200, 3800), ("forget10", 400, 3600)):
        bundle = load_tofu(tofu_dir, split)
        assert (len(bundle.forget), len(bundle.retain)) == (forget_rows, retain_rows)
        assert len(bundle.eval_splits["forget"]) == forget_rows
    assert len(bundle.eval_splits["retain"]) == 400
    assert len(bundle.eval_splits["real_authors"]) == 100 and len(bundle.eval_splits["world_facts"]) == 117
    assert "holdout" in bundle.missing_eval_splits()


def test_tofu_author_subset_is_contiguous_and_aligned(tofu_dir):
    bundle = load_tofu(tofu_dir, "forget01", retain_authors=18)
    assert bundle.forget_authors == ["Basil Mahfouz Al-Kuwaiti", "Nikolai Abilov"]
    assert (len(bundle.forget), len(bundle.retain)) == (40, 360) and len(bundle.retain_authors) == 18
    # Authors are 20 contiguous rows each, and their name appears in their own questions or answers.
    for split in (bundle.forget, bundle.retain):
        authors = split["author"]
        assert all(len(set(authors[i : i + 20])) == 1 for i in range(0, len(authors), 20))
        assert len(set(authors)) == len(authors) // 20
    row = bundle.forget[0]
    assert "Basil Mahfouz Al-Kuwaiti" in row["answer"]
    # The perturbed twin holds the same questions and answers in the same order.
    forget_eval = bundle.eval_splits["forget"]
    assert forget_eval["question"] == bundle.forget["question"] and forget_eval["answer"] == bundle.forget["answer"]
    assert all(len(p) == 5 for p in forget_eval["perturbed_answer"])
    # retain_perturbed covers the 18 selected retain authors; two unused authors become the holdout split.
    assert set(bundle.eval_splits["retain"]["author"]) == set(bundle.retain_authors)
    assert len(bundle.eval_splits["retain"]) == 360
    assert len(set(bundle.eval_splits["holdout"]["author"])) == 2
    assert not set(bundle.eval_splits["holdout"]["author"]) & set(bundle.retain_authors + bundle.forget_authors)


def test_tofu_bad_input_is_named(tofu_dir, tmp_path):
    with pytest.raises(ValueError, match="forget_split"):
        load_tofu(tofu_dir, "forget20")
    with pytest.raises(ValueError, match="num_retain_authors=500"):
        load_tofu(tofu_dir, "forget01", retain_authors=500)
    with pytest.raises(ValueError, match="num_forget_authors"):
        load_tofu(tofu_dir, "forget01", forget_authors=[3])
    (tmp_path / "full.json").write_text((tofu_dir / "full.json").read_text())
    with pytest.raises(FileNotFoundError, match="forget01_perturbed.json"):
        load_tofu(tmp_path, "forget01")
    with pytest.raises(FileNotFoundError, match="tofu_path"):
        load_tofu(tmp_path / "nowhere", "forget01")


# ---- builders and refusals ----------------------------------------------------------------------------------------


def test_builders_make_trl_dataset_types(bundle):
    sft = sft_dataset(bundle.forget)
    assert sft.column_names == ["prompt", "completion"] and len(sft) == len(bundle.forget)
    assert sft[0]["prompt"] == f"Question: {bundle.forget[0]['question']}\nAnswer:"
    assert sft[0]["completion"] == " " + bundle.forget[0]["answer"]

    preference = preference_dataset(bundle.forget, seed=0)
    assert preference.column_names == ["prompt", "chosen", "rejected"]
    assert all(c.strip() in REFUSALS for c in preference["chosen"])
    assert preference["rejected"] == sft["completion"]
    assert preference_dataset(bundle.forget, seed=0)["chosen"] == preference["chosen"]
    alternatives = preference_dataset(bundle.eval_splits["forget"], alternative_column="perturbed_answer")
    assert all(
        c.strip() in row["perturbed_answer"] for c, row in zip(alternatives["chosen"], bundle.eval_splits["forget"])
    )

    chat = sft_dataset(bundle.forget, PromptFormat("chat", system_prompt="Be brief."))
    assert chat[0]["prompt"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": bundle.forget[0]["question"]},
    ]
    assert chat[0]["completion"] == [{"role": "assistant", "content": bundle.forget[0]["answer"]}]

    prompts = prompt_dataset(bundle.forget)
    assert prompts.column_names == ["prompt", "author", "answer"]


def test_prompt_format_rejects_a_template_without_the_question():
    with pytest.raises(ValueError, match="question_template"):
        PromptFormat(question_template="Q: ")


def test_refusal_files_load_in_every_form(tmp_path, tofu_dir):
    assert len(load_refusals(tofu_dir / "idontknow.jsonl")) == 100
    path = tmp_path / "mine.jsonl"
    path.write_text('"I cannot say."\n\n{"text": "No idea."}\nNot known.\n')
    assert load_refusals(path) == ["I cannot say.", "No idea.", "Not known."]
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="holds no refusal"):
        load_refusals(tmp_path / "empty.txt")
    (tmp_path / "bad.jsonl").write_text(json.dumps({"answer": "x"}))
    with pytest.raises(ValueError, match="text"):
        load_refusals(tmp_path / "bad.jsonl")
