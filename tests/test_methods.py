"""Each unlearning method on a tiny model that knows its data: the forget answers become less likely, the retain
answers stay within a stated tolerance, and the weights change."""

import math

import pytest
import torch
from conftest import QUIET_TRAINING, mean_probability
from peft import LoraConfig
from transformers import AutoModelForCausalLM

from rlunlearn.data import preference_dataset, sft_dataset
from rlunlearn.trainers import METHODS, FLATConfig, FLATTrainer, LLMUConfig, LLMUTrainer, NPOConfig, NPOTrainer
from rlunlearn.trainers.flat import average_probability

# The forget probability must fall below FORGET_RATIO of its value before; the retain probability must not fall by
# more than the tolerance (absolute). Methods that see only forget data (GA, FLAT, UNDIAL and CE-U) move the retain
# answers along with the forget ones on this 4-author model, whose authors share every sentence template; their
# tolerance is wider.
FORGET_RATIO = 0.75
RETAIN_TOLERANCE = {"ga": 0.25, "flat": 0.25, "undial": 0.25, "ceu": 0.25}
DEFAULT_RETAIN_TOLERANCE = 0.15

# Settings that unlearn the tiny model in a few steps, chosen with margin on both sides of both bounds.
TINY_SETTINGS = {
    "ga": {"learning_rate": 6e-4},
    "graddiff": {"learning_rate": 1e-3},
    "npo": {"learning_rate": 6e-4},
    "simnpo": {"learning_rate": 1e-3, "forget_weight": 1.0},
    "idkdpo": {"learning_rate": 1.5e-3},
    "llmu": {"learning_rate": 1e-3},
    "flat": {"learning_rate": 9e-4},
    "wga": {"learning_rate": 1e-3},
    "satimp": {"learning_rate": 3e-3},
    "undial": {"learning_rate": 6e-4},
    "ceu": {"learning_rate": 4e-4},
    "pdu": {"learning_rate": 1e-3, "retain_weight": 300.0, "dual_warmup_epochs": 1, "retain_loss_tolerance": 0.5},
    "rmu": {"learning_rate": 5e-3, "rmu_layer": 0, "steering_coeff": 20.0, "alpha": 100.0, "rmu_update_module": ""},
}


def forget_dataset(trainer_class, bundle):
    if trainer_class.forget_data == "completion":
        return sft_dataset(bundle.forget)
    return preference_dataset(bundle.forget, seed=0)


def run(method, finetuned, bundle, tokenizer, tmp_path, model=None, peft_config=None, **overrides):
    config_class, trainer_class = METHODS[method]
    values = dict(
        output_dir=str(tmp_path / method),
        num_train_epochs=3,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=1,
        warmup_steps=0.0,
        **QUIET_TRAINING,
        **TINY_SETTINGS[method],
    )
    config = config_class(**{**values, **overrides})
    trainer = trainer_class(
        model=model if model is not None else AutoModelForCausalLM.from_pretrained(finetuned),
        args=config,
        train_dataset=forget_dataset(trainer_class, bundle),
        retain_dataset=sft_dataset(bundle.retain) if trainer_class.needs_retain(config) else None,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    trainer.train()
    return trainer


@pytest.fixture(scope="module")
def before(finetuned, bundle, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(finetuned)
    return {
        "forget": mean_probability(model, tokenizer, sft_dataset(bundle.forget)),
        "retain": mean_probability(model, tokenizer, sft_dataset(bundle.retain)),
        "weights": {n: p.detach().clone() for n, p in model.named_parameters()},
    }


@pytest.mark.parametrize("method", list(TINY_SETTINGS))
def test_method_forgets_and_keeps_the_rest(method, finetuned, bundle, tokenizer, tmp_path, before):
    trainer = run(method, finetuned, bundle, tokenizer, tmp_path)
    forget = mean_probability(trainer.model, tokenizer, sft_dataset(bundle.forget))
    retain = mean_probability(trainer.model, tokenizer, sft_dataset(bundle.retain))
    assert before["forget"] > 0.9 and before["retain"] > 0.9  # the model knew both
    assert forget < FORGET_RATIO * before["forget"], (forget, before["forget"])
    assert retain > before["retain"] - RETAIN_TOLERANCE.get(method, DEFAULT_RETAIN_TOLERANCE), (
        retain,
        before["retain"],
    )
    assert any(not torch.equal(p, before["weights"][n]) for n, p in trainer.model.named_parameters())
    assert all(math.isfinite(entry["loss"]) for entry in trainer.state.log_history if "loss" in entry)


@pytest.mark.parametrize("divergence", ["kl", "js", "pearson", "tv"])
def test_flat_raises_the_template_and_lowers_the_forget_answer(
    divergence, finetuned, bundle, tokenizer, tmp_path, before
):
    trainer = run("flat", finetuned, bundle, tokenizer, tmp_path, divergence=divergence)
    logged = [entry for entry in trainer.state.log_history if "prob_template" in entry]
    for key in ("prob_template", "prob_forget", "template_term", "forget_term"):
        assert key in logged[0]
    assert logged[-1]["prob_template"] > logged[0]["prob_template"]
    assert logged[-1]["prob_forget"] < logged[0]["prob_forget"]
    assert mean_probability(trainer.model, tokenizer, sft_dataset(bundle.forget)) < before["forget"]


def test_flat_loss_by_hand():
    """L = −g*(P_e) + f*(g*(P_f)) for P_e = 0.2, P_f = 0.9."""
    from rlunlearn.trainers.flat import DIVERGENCES

    p_e, p_f = torch.tensor(0.2), torch.tensor(0.9)
    expected = {
        "kl": -0.2 + math.exp(0.9 - 1),
        "pearson": -0.2 + (0.9**2 / 4 + 0.9),
        "tv": -0.5 * math.tanh(0.2) + 0.5 * math.tanh(0.9),
        # g*(v) = log 2 − log(1 + e^−v); f*(g*(v)) = −log(2 − 2/(1 + e^−v)).
        "js": -(math.log(2) - math.log(1 + math.exp(-0.2))) - math.log(2 - 2 / (1 + math.exp(-0.9))),
    }
    for name, (activation, conjugate) in DIVERGENCES.items():
        assert (-activation(p_e) + conjugate(activation(p_f))).item() == pytest.approx(expected[name], rel=1e-6)


def test_flat_averaging_per_answer_and_over_the_padded_batch():
    # Two answers: token probabilities 0.5, 0.25 and 0.8; the other positions are prompt or padding.
    logps = torch.tensor([[0.5, 0.25, 0.9], [0.8, 0.9, 0.9]]).log()
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert average_probability(logps, mask, "per_answer").tolist() == pytest.approx([0.375, 0.8])
    assert average_probability(logps, mask, "padded_batch").item() == pytest.approx((0.5 + 0.25 + 0.8) / 6)


def test_npo_reference_is_the_model_before_unlearning(finetuned, bundle, tokenizer, tmp_path, before):
    """Also for a model handed over from another TRL trainer (whose forward TRL patched): the reference must be a
    real copy, or the log-ratio would stay 0."""
    from trl import SFTConfig, SFTTrainer

    model = AutoModelForCausalLM.from_pretrained(finetuned)
    sft = SFTTrainer(
        model=model,
        args=SFTConfig(
            output_dir=str(tmp_path / "sft"),
            max_steps=1,
            learning_rate=1e-9,
            report_to="none",
            bf16=False,
            disable_tqdm=True,
        ),
        train_dataset=sft_dataset(bundle.retain),
        processing_class=tokenizer,
    )
    sft.train()
    trainer = run("npo", finetuned, bundle, tokenizer, tmp_path, model=sft.model)
    ratios = [entry["forget_log_ratio"] for entry in trainer.state.log_history if "forget_log_ratio" in entry]
    assert abs(ratios[0]) < 1e-3 and ratios[-1] < -1.0
    reference = trainer.accelerator.unwrap_model(trainer.ref_model)
    for name, param in reference.named_parameters():
        torch.testing.assert_close(param, before["weights"][name], atol=1e-6, rtol=0)


def test_llmu_pairs_forget_questions_with_random_retain_answers(finetuned, bundle, tokenizer, tmp_path):
    trainer = run("llmu", finetuned, bundle, tokenizer, tmp_path, max_steps=1, random_answers=3)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    groups = trainer._sampled_groups(batch, step=0, micro_step=0)
    assert groups["random_input_ids"].shape[0] == 2 * 3 and groups["retain_input_ids"].shape[0] == 4
    retain_answers = set(sft_dataset(bundle.retain)["completion"])
    for row in range(6):
        text = tokenizer.decode(
            groups["random_input_ids"][row][groups["random_attention_mask"][row].bool()], skip_special_tokens=True
        )
        forget_prompt = tokenizer.decode(
            batch["forget_input_ids"][row // 3][: int(batch["forget_completion_mask"][row // 3].argmax())],
            skip_special_tokens=True,
        )
        assert text.startswith(forget_prompt) and text[len(forget_prompt) :] in retain_answers
    # Fresh answers at every step.
    assert not torch.equal(trainer._sampled_groups(batch, 1, 0)["random_input_ids"], groups["random_input_ids"])


@pytest.mark.parametrize("method", ["flat", "npo", "rmu"])
def test_qlora_unlearning(method, finetuned, bundle, tokenizer, tmp_path, before):
    from trl import ModelConfig

    from rlunlearn.models import load_model

    model = load_model(ModelConfig(model_name_or_path=str(finetuned), load_in_4bit=True, use_peft=True))
    assert model.is_loaded_in_4bit
    lora = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = run(method, finetuned, bundle, tokenizer, tmp_path, model=model, peft_config=lora, learning_rate=1e-2)
    assert trainer.ref_model is None  # the reference is the base with the adapter disabled
    forget = mean_probability(trainer.model, tokenizer, sft_dataset(bundle.forget))
    assert forget < FORGET_RATIO * before["forget"]
    with trainer.model.disable_adapter():
        base = mean_probability(trainer.model, tokenizer, sft_dataset(bundle.forget))
    assert base == pytest.approx(before["forget"], abs=0.05)  # the 4-bit base itself did not move


def test_bad_hyperparameters_are_named():
    with pytest.raises(ValueError, match="--divergence 'hellinger' is not one of"):
        FLATConfig(output_dir="x", divergence="hellinger")
    with pytest.raises(ValueError, match="--beta"):
        NPOConfig(output_dir="x", beta=0)
    with pytest.raises(ValueError, match="--retain_loss_type"):
        NPOConfig(output_dir="x", retain_loss_type="mse")
    with pytest.raises(ValueError, match="--random_answers"):
        LLMUConfig(output_dir="x", random_answers=0)
    assert FLATTrainer.needs_retain(FLATConfig(output_dir="x")) is False
    assert LLMUTrainer.needs_reference(LLMUConfig(output_dir="x")) and NPOTrainer.needs_reference(
        NPOConfig(output_dir="x")
    )
