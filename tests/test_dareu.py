"""DareU on a tiny model: each algorithm raises the de-attribution reward and lowers the forget answers' probability
while the retain answers' holds; QLoRA; bad rewards and bad settings fail clearly."""

import logging

import pytest
import torch
from conftest import QUIET_TRAINING, mean_probability
from peft import LoraConfig
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

from rlunlearn.data import prompt_dataset, sft_dataset
from rlunlearn.rewards import AttributionReward, DegeneracyPenalty
from rlunlearn.trainers import DareUConfig, DareUTrainer
from rlunlearn.trainers.dareu import generalized_advantages


def config(tmp_path, **overrides):
    values = dict(
        output_dir=str(tmp_path / "dareu"),
        learning_rate=1e-3,
        num_train_epochs=8,
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=24,
        **QUIET_TRAINING,
    )
    return DareUConfig(**{**values, **overrides})


def trainer(model, rewards, args, bundle, tokenizer, **kwargs):
    return DareUTrainer(
        model=model,
        reward_funcs=rewards,
        args=args,
        train_dataset=prompt_dataset(bundle.forget),
        retain_dataset=sft_dataset(bundle.retain),
        processing_class=tokenizer,
        **kwargs,
    )


@pytest.fixture(scope="module")
def rewards(attributor, bundle):
    return [AttributionReward(attributor[0], bundle.forget_authors), DegeneracyPenalty()]


@pytest.mark.parametrize("algorithm", ["grpo", "rloo", "ppo"])
def test_dareu_de_attributes_the_forget_answers(algorithm, finetuned, bundle, tokenizer, tmp_path, rewards):
    model = AutoModelForCausalLM.from_pretrained(finetuned)
    forget_before = mean_probability(model, tokenizer, sft_dataset(bundle.forget))
    retain_before = mean_probability(model, tokenizer, sft_dataset(bundle.retain))
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    # PPO takes 4 optimizer steps on each rollout batch: fewer rollouts make as many steps.
    epochs = 3 if algorithm == "ppo" else 8
    run = trainer(model, rewards, config(tmp_path, algorithm=algorithm, num_train_epochs=epochs), bundle, tokenizer)
    run.train()

    logged = [entry for entry in run.state.log_history if "reward" in entry]
    third = len(logged) // 3
    early = sum(e["reward"] for e in logged[:third]) / third
    late = sum(e["reward"] for e in logged[-third:]) / third
    assert late > early + 0.1, (early, late)
    assert all("retain_kl" in e and "kl" in e and "frac_reward_zero_std" in e for e in logged)
    forget_after = mean_probability(run.model, tokenizer, sft_dataset(bundle.forget))
    retain_after = mean_probability(run.model, tokenizer, sft_dataset(bundle.retain))
    assert forget_after < 0.8 * forget_before, (forget_before, forget_after)
    assert retain_after > retain_before - 0.1, (retain_before, retain_after)
    assert any(not torch.equal(p, weights[n]) for n, p in run.model.named_parameters() if n in weights)
    if algorithm == "ppo":
        assert all("value_loss" in e for e in logged)
        assert not any("value_head" in name for name in run.model.state_dict())  # the critic is not saved


def test_dareu_trains_lora_adapters_on_a_4bit_model(finetuned, bundle, tokenizer, tmp_path, rewards):
    model = AutoModelForCausalLM.from_pretrained(
        finetuned, quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")
    )
    run = trainer(
        model,
        rewards,
        config(tmp_path, num_train_epochs=1),
        bundle,
        tokenizer,
        peft_config=LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"),
    )
    adapters = {n: p.detach().clone() for n, p in run.model.named_parameters() if p.requires_grad}
    assert adapters and all("lora" in n for n in adapters)
    run.train()
    assert any(not torch.equal(p, adapters[n]) for n, p in run.model.named_parameters() if n in adapters)


def test_bad_rewards_stop_training_with_a_clear_error(finetuned, bundle, tokenizer, tmp_path):
    def too_few(prompts, completions, **kwargs):
        return [0.0] * (len(completions) - 1)

    def not_a_number(prompts, completions, **kwargs):
        return [float("nan")] * len(completions)

    for reward, message in ((too_few, "returned 7 rewards, but 8"), (not_a_number, "'not_a_number' returned a NaN")):
        model = AutoModelForCausalLM.from_pretrained(finetuned)
        run = trainer(model, [reward], config(tmp_path, max_steps=1), bundle, tokenizer)
        with pytest.raises(ValueError, match=message):
            run.train()


def test_a_reward_without_spread_is_reported(finetuned, bundle, tokenizer, tmp_path, caplog):
    def constant(prompts, completions, **kwargs):
        return [1.0] * len(completions)

    def by_prompt(prompts, completions, **kwargs):
        return [float(sum(map(ord, str(prompt)))) for prompt in prompts]

    def warnings_of(reward, algorithm):
        model = AutoModelForCausalLM.from_pretrained(finetuned)
        run = trainer(model, [reward], config(tmp_path, algorithm=algorithm, max_steps=2), bundle, tokenizer)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="rlunlearn.trainers.dareu"):
            run.train()
        return [e for e in run.state.log_history if "reward" in e], caplog.text

    logged, warned = warnings_of(constant, "grpo")
    assert [e["frac_reward_zero_std"] for e in logged] == [1.0, 1.0]
    assert "frac_reward_zero_std = 1" in warned
    # A reward that differs between prompts and not within them: no group teaches GRPO, so it warns; PPO, whose
    # baseline is its value head, learns from it and does not.
    logged, warned = warnings_of(by_prompt, "grpo")
    assert all(e["frac_reward_zero_std"] == 1.0 and e["reward_std"] > 0 for e in logged)
    assert "frac_reward_zero_std = 1" in warned
    logged, warned = warnings_of(by_prompt, "ppo")
    assert all(e["frac_reward_zero_std"] == 1.0 and e["reward_std"] > 0 for e in logged)
    assert "DareU" not in warned
    logged, warned = warnings_of(constant, "ppo")
    assert "reward_std = 0" in warned


def test_bad_settings_fail_before_training(finetuned, bundle, tokenizer, tmp_path, rewards):
    with pytest.raises(ValueError, match="--beta 0.0"):
        config(tmp_path, beta=0.0)
    with pytest.raises(ValueError, match="--algorithm 'a2c'"):
        config(tmp_path, algorithm="a2c")
    with pytest.raises(ValueError, match="--use_vllm: generating with vLLM needs vLLM installed"):
        config(tmp_path, use_vllm=True)  # no vLLM and no GPU here: said before TRL's trainer would load anything
    with pytest.raises(ValueError, match="retain_dataset"):
        DareUTrainer(
            model=AutoModelForCausalLM.from_pretrained(finetuned),
            reward_funcs=rewards,
            args=config(tmp_path),
            train_dataset=prompt_dataset(bundle.forget),
            processing_class=tokenizer,
        )


def test_rloo_advantage_is_the_reward_minus_the_others_mean():
    from types import SimpleNamespace

    state = SimpleNamespace(num_generations=4, num_generations_eval=4, model=SimpleNamespace(training=True))
    rewards = torch.tensor([1.0, 2.0, 3.0, 6.0, 0.0, 0.0, 0.0, 4.0])
    # Group 1: the others' means are 11/3, 10/3, 3, 2; group 2: 4/3, 4/3, 4/3, 0.
    expected = torch.tensor([1 - 11 / 3, 2 - 10 / 3, 0.0, 4.0, -4 / 3, -4 / 3, -4 / 3, 4.0])
    assert torch.allclose(DareUTrainer._rloo_advantages(state, rewards), expected)


def test_gae_matches_the_recursion_by_hand():
    # One answer of three tokens and a padding position; reward 1 on the last token, γ = 0.9, λ = 0.8.
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.2, 0.4, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    # δ2 = 1 − 0.4 = 0.6; δ1 = 0.9·0.4 − 0.2 = 0.16; δ0 = 0.9·0.2 − 0.5 = −0.32; γλ = 0.72
    expected = torch.tensor([[-0.32 + 0.72 * (0.16 + 0.72 * 0.6), 0.16 + 0.72 * 0.6, 0.6, 0.0]])
    assert torch.allclose(generalized_advantages(rewards, values, mask, 0.9, 0.8), expected)


def test_a_reward_of_the_wrong_length_stops_at_the_first_step(finetuned, bundle, tokenizer, tmp_path):
    def one_reward(prompts, completions, **kwargs):
        return [0.0]

    run = trainer(AutoModelForCausalLM.from_pretrained(finetuned), [one_reward], config(tmp_path), bundle, tokenizer)
    with pytest.raises(ValueError, match="'one_reward' returned 1 rewards, but 8 were expected"):
        run.train()
    assert run.state.global_step == 0


def test_ppo_takes_several_clipped_steps_on_each_rollout_batch(finetuned, bundle, tokenizer, tmp_path, rewards):
    # One rollout batch (8 answers) and the default 4 PPO epochs over it, one optimizer step each.
    args = config(tmp_path, algorithm="ppo", max_steps=4)
    assert args.num_iterations == 4
    run = trainer(AutoModelForCausalLM.from_pretrained(finetuned), rewards, args, bundle, tokenizer)
    run.train()
    logged = [entry for entry in run.state.log_history if "clip_fraction" in entry]
    assert len(logged) == 4
    assert sum("reward" in entry for entry in logged) == 1  # generated once, optimised on four times
    assert [next(k for k in entry if k.startswith("approx_kl/epoch_")) for entry in logged] == [
        f"approx_kl/epoch_{epoch}" for epoch in (1, 2, 3, 4)
    ]
    # The first pass starts from the rollout's own log-probabilities: ratio 1. Later passes move away and get clipped.
    assert logged[0]["approx_kl"] < 1e-6 and logged[0]["clip_fraction"] == 0.0
    assert all(entry["approx_kl"] > 1e-4 for entry in logged[1:]), [e["approx_kl"] for e in logged]
    assert max(entry["clip_fraction"] for entry in logged) > 0, [e["clip_fraction"] for e in logged]
    # The critic fits the returns of the batch over its epochs.
    value_losses = [entry[f"value_loss/epoch_{epoch}"] for epoch, entry in enumerate(logged, 1)]
    assert value_losses[-1] < value_losses[0], value_losses
    with pytest.raises(
        ValueError, match="--steps_per_generation 3 must be a multiple of --gradient_accumulation_steps 2"
    ):
        config(tmp_path, algorithm="ppo", gradient_accumulation_steps=2, steps_per_generation=3)


def test_probabilities_are_the_models_own_at_any_sampling_temperature(finetuned, bundle, tokenizer, tmp_path, rewards):
    # TRL samples and scores the policy at logits / T; the retain term and evaluation must read the model at T = 1.
    forget = sft_dataset(bundle.forget)
    args = config(tmp_path, temperature=0.5, retain_loss_type="nll", per_device_eval_batch_size=8)
    run = trainer(AutoModelForCausalLM.from_pretrained(finetuned), rewards, args, bundle, tokenizer)
    batch = next(iter(run._eval_loader(forget)))
    input_ids, attention_mask = batch["eval_input_ids"], batch["eval_attention_mask"]
    with torch.no_grad():
        logits = run.model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()
        own = torch.log_softmax(logits, -1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
        sampled = torch.log_softmax(logits / 0.5, -1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
        logps, mask = run.completion_logps(run.model, batch, "eval")
        retain_nll, _ = run.retain_values(
            run.model, {k.replace("eval_", "retain_"): v for k, v in batch.items()}, "nll"
        )
        policy_logps, _, _ = run._get_per_token_logps_and_entropies(run.model, input_ids, attention_mask, mask.size(1))
    torch.testing.assert_close(logps * mask, own[:, -mask.size(1) :] * mask, atol=1e-5, rtol=0)
    torch.testing.assert_close(-retain_nll * mask, own[:, -mask.size(1) :] * mask, atol=1e-5, rtol=0)
    # The sampling policy itself stays at the temperature it samples with.
    torch.testing.assert_close(policy_logps * mask, sampled[:, -mask.size(1) :] * mask, atol=1e-5, rtol=0)
    expected = mean_probability(run.model, tokenizer, forget)
    assert run.answer_probability(forget) == pytest.approx(expected, abs=1e-5)


def test_activations_are_recomputed_only_when_asked(tmp_path):
    """TRL's GRPO config recomputes activations by default; DareU, as the toolkit's other trainers, only when asked."""
    assert not config(tmp_path).activation_checkpointing and not config(tmp_path).gradient_checkpointing
    assert config(tmp_path, activation_checkpointing=True).gradient_checkpointing
    assert not config(tmp_path).ddp_find_unused_parameters  # the PPO critic runs outside DDP's forward


def test_the_attribution_classifier_is_made_without_the_load_report_and_warns_of_a_missing_body_weight(
    finetuned, tmp_path, caplog
):
    """transformers' load report lists the classifier's new head as missing, a table on every DareU run's console:
    left out. A weight missing from the model's body still reaches the user, as rlunlearn's warning."""
    import shutil

    from safetensors.torch import load_file, save_file
    from trl import ModelConfig

    from rlunlearn.attribution import classifier_from_lm

    transformers_records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = transformers_records.append
    logging.getLogger("transformers").addHandler(handler)
    try:
        with caplog.at_level(logging.WARNING, logger="rlunlearn.attribution"):
            model = classifier_from_lm(ModelConfig(model_name_or_path=str(finetuned)), ["a", "b", "none"])
        assert model.config.id2label == {0: "a", 1: "b", 2: "none"} and not caplog.records

        damaged = tmp_path / "without-norm"
        shutil.copytree(finetuned, damaged)
        weights = load_file(damaged / "model.safetensors")
        del weights["model.norm.weight"]
        save_file(weights, damaged / "model.safetensors", metadata={"format": "pt"})
        with caplog.at_level(logging.WARNING, logger="rlunlearn.attribution"):
            classifier_from_lm(ModelConfig(model_name_or_path=str(damaged)), ["a", "b"])
        assert "lacks 1 weights of its body (model.norm.weight)" in caplog.text
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    assert not [r for r in transformers_records if "LOAD REPORT" in r.getMessage()]
    # The filter is gone with the load: a later load's report reaches transformers' logger again.
    from transformers import AutoModelForSequenceClassification

    logging.getLogger("transformers").addHandler(handler)
    try:
        AutoModelForSequenceClassification.from_pretrained(finetuned, num_labels=2)
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    assert [r for r in transformers_records if "LOAD REPORT" in r.getMessage()]
