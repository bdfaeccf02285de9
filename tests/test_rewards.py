"""Rewards: the attribution classifier and its reward, the shaping terms, calibration, and the plug-in registry."""

import math

import pytest
import torch

from rlunlearn.data import REFUSALS, PromptFormat, attribution_dataset, sft_dataset
from rlunlearn.rewards import (
    AttributionReward,
    ClassifierReward,
    DegeneracyPenalty,
    RefusalBonus,
    fit_temperature,
    load_reward,
    register,
    registered,
)


def test_attribution_data_labels_every_owner_and_none(bundle):
    train, held_out, labels = attribution_dataset(bundle, retain_labels="per_author")
    assert labels == bundle.forget_authors + bundle.retain_authors + ["none"]
    assert set(held_out["label"]) == set(range(len(labels)))  # every label is held out at least once
    assert 0.08 < len(held_out) / (len(train) + len(held_out)) < 0.15
    forget_answer = bundle.forget["answer"][0]
    assert {"text": forget_answer, "label": 0} in train.to_list() + held_out.to_list()


def test_attribution_views_label_cut_and_padded_answers_with_their_owner(bundle):
    plain_train, plain_held_out, labels = attribution_dataset(bundle)
    train, held_out, _ = attribution_dataset(bundle, prefix_views=2, padded_views=1)
    owned_texts = [row for row in plain_train.to_list() + plain_held_out.to_list() if labels[row["label"]] != "none"]
    # Each owned row: its answer and 3 views, each alone and after its prompt; `none` rows as before.
    assert len(train) + len(held_out) == len(plain_train) + len(plain_held_out) + 3 * len(owned_texts)
    owned_rows = [*bundle.forget, *bundle.retain]
    owner = {row["answer"]: row["author"] for row in owned_rows}
    prompts = tuple(PromptFormat().prompt(row["question"]) for row in owned_rows)
    kinds = {"prefix": 0, "padded": 0}
    for split in (train, held_out):
        texts = set(split["text"])
        for text, label in ((row["text"], labels[row["label"]]) for row in split):
            if label == "none" or text in owner or text.startswith(prompts):
                continue
            # A view alone: an owned answer's prefix (at least a third of its words) or the answer padded, labelled
            # with the answer's owner and on the side of the split where the answer is.
            padded = [a for a in owner if text.startswith(a + " ") and owner[a] == label and a in texts]
            prefix = [
                a
                for a in owner
                if a.startswith(text + " ")
                and owner[a] == label
                and a in texts
                and len(text.split()) >= len(a.split()) // 3
            ]
            assert padded or prefix, (text, label)
            kinds["padded" if padded else "prefix"] += 1
    assert kinds == {"prefix": len(owned_texts), "padded": len(owned_texts) // 2}  # 2 prefixes and 1 padded a row
    with pytest.raises(ValueError, match="--prefix_views -1"):
        attribution_dataset(bundle, prefix_views=-1)


def test_attribution_classifier_learns_whose_data_a_text_is(attributor):
    classifier, metrics, _ = attributor
    assert classifier.labels[-2:] == ["retain", "none"]
    assert metrics["accuracy"] >= 0.9, metrics
    assert metrics["calibrated_nll"] <= metrics["nll"] + 1e-6


def test_attribution_reward_falls_for_forget_text_and_rises_for_refusals(attributor, bundle):
    classifier, _, _ = attributor
    reward = AttributionReward(classifier, bundle.forget_authors)
    forget = sft_dataset(bundle.forget)
    retain = sft_dataset(bundle.retain)
    on_forget = reward(forget["prompt"], forget["completion"])
    on_retain = reward(retain["prompt"][:20], retain["completion"][:20])
    on_refusals = reward(forget["prompt"][: len(REFUSALS)], [" " + r for r in REFUSALS])
    assert all(-1 <= r <= 0 for r in on_forget + on_retain + on_refusals)
    assert sum(on_forget) / len(on_forget) < -0.7
    assert sum(on_retain) / len(on_retain) > -0.2
    assert sum(on_refusals) / len(on_refusals) > -0.1


def test_a_classifier_must_know_the_forget_owners(attributor):
    classifier, _, _ = attributor
    with pytest.raises(ValueError, match="no label.*'Nobody Known'"):
        AttributionReward(classifier, ["Nobody Known"])


def test_degeneracy_penalty_by_hand():
    penalty = DegeneracyPenalty(ngram=2)
    # "a b a b a b": bigrams ab ba ab ba ab, 2 distinct of 5 -> −(1 − 2/5)
    assert penalty(["q"] * 3, ["a b a b a b", "", "born in Lisbon in 1950"]) == pytest.approx([-0.6, -1.0, 0.0])


def test_refusal_bonus():
    bonus = RefusalBonus(REFUSALS)
    assert bonus(["q", "q"], [" I don't know.", " She was born in Lisbon in 1950."]) == [1.0, 0.0]


def test_temperature_scaling_cools_an_overconfident_classifier():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (600,), generator=generator)
    predicted = torch.where(torch.rand(600, generator=generator) < 0.7, labels, (labels + 1) % 3)
    logits = 8.0 * torch.nn.functional.one_hot(predicted, 3).float()  # 70% right, ~100% sure
    accuracy = (predicted == labels).float().mean().item()
    # The likelihood is highest when the top probability equals the accuracy: e^(8/T) / (e^(8/T) + 2) = accuracy.
    assert fit_temperature(logits, labels) == pytest.approx(8 / math.log(2 * accuracy / (1 - accuracy)), rel=1e-3)


def test_rewards_plug_in_by_name_path_and_model_folder(attributor, bundle):
    @register("answer_length_for_test")
    def answer_length(prompts, completions, **kwargs):
        return [float(len(c)) for c in completions]

    assert "answer_length_for_test" in registered() and "attribution" in registered()
    assert load_reward("answer_length_for_test") is answer_length
    with pytest.raises(ValueError, match="takes no options"):
        load_reward("answer_length_for_test", scale=2)
    with pytest.raises(ValueError, match="registered already"):
        register("answer_length_for_test")(DegeneracyPenalty)
    assert load_reward("rlunlearn.rewards.attribution:DegeneracyPenalty", ngram=3).ngram == 3
    assert load_reward("degeneracy")(["q"], [""]) == [-1.0]

    _, _, folder = attributor
    by_folder = load_reward(f"{folder}#none")
    assert isinstance(by_folder, ClassifierReward) and by_folder.labels == ["none"]
    forget = sft_dataset(bundle.forget)
    none_on_forget = by_folder(forget["prompt"][:5], forget["completion"][:5])
    none_on_refusal = by_folder(forget["prompt"][:5], [" I don't know."] * 5)
    assert max(none_on_forget) < min(none_on_refusal)
    with pytest.raises(ValueError, match="Unknown reward 'no_such_reward'.*attribution"):
        load_reward("no_such_reward")
