import math

import pytest
import torch
from conftest import QUIET_TRAINING, mean_probability
from datasets import Dataset
from transformers import AutoModelForCausalLM

from rlunlearn.data import sft_dataset
from rlunlearn.models import build_model
from rlunlearn.trainers import GAConfig, GATrainer, NonFiniteLossError
from rlunlearn.trainers.utils import GroupCollator, RetainSampler, tokenize_completions


def config(tmp_path, **overrides) -> GAConfig:
    values = dict(
        output_dir=str(tmp_path / "run"),
        learning_rate=1e-3,
        num_train_epochs=2,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=1,
        warmup_steps=0.0,
        **QUIET_TRAINING,
    )
    values.update(overrides)
    return GAConfig(**values)


def test_ga_lowers_the_forget_probability_and_changes_weights(tmp_path, bundle, tokenizer, finetuned):
    model = AutoModelForCausalLM.from_pretrained(finetuned)
    forget = sft_dataset(bundle.forget)
    before = mean_probability(model, tokenizer, forget)
    assert before > 0.5  # the fine-tuned model knows the forget answers
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = GATrainer(model=model, args=config(tmp_path), train_dataset=forget, processing_class=tokenizer)
    trainer.train()
    after = mean_probability(trainer.model, tokenizer, forget)
    assert after < 0.5 * before
    assert any(not torch.equal(p, weights[n]) for n, p in trainer.model.named_parameters())
    logged = [entry["forget_logp"] for entry in trainer.state.log_history if "forget_logp" in entry]
    assert logged[-1] < logged[0]
    assert trainer.args.bf16 is False  # no bf16 on a CPU


def test_loss_is_averaged_over_the_tokens_of_the_global_batch(tmp_path, bundle, tokenizer):
    """One SGD step on 4 examples gives the same weights whether they come as one batch or as 2 x 2 accumulated:
    each term is divided by the answer tokens of the whole accumulation window, not averaged per micro-batch."""
    forget = sft_dataset(bundle.forget.select(range(4)))
    lengths = [len(tokenizer(c).input_ids) for c in forget["completion"]]
    assert len(set(lengths)) > 1  # unequal answers: a mean of micro-batch means would differ

    results = []
    for batch_size, accumulation in ((4, 1), (2, 2)):
        model = build_model(tokenizer, "tiny", seed=0)
        args = config(
            tmp_path,
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
            max_steps=1,
            optim="sgd",
            weight_decay=0.0,
            max_grad_norm=0.0,
            learning_rate=0.5,
        )
        trainer = GATrainer(model=model, args=args, train_dataset=forget, processing_class=tokenizer)
        trainer.train()
        results.append({n: p.detach().clone() for n, p in trainer.model.named_parameters()})
    for name, value in results[0].items():
        torch.testing.assert_close(results[1][name], value, rtol=1e-4, atol=1e-6)


def test_non_finite_loss_stops_training_and_keeps_the_last_good_weights(tmp_path, bundle, tokenizer, tiny_model):
    forget = sft_dataset(bundle.forget)

    class Exploding(GATrainer):
        def _compute_loss(self, model, inputs):
            loss = super()._compute_loss(model, inputs)
            return loss * float("nan") if self.state.global_step == 2 else loss

    trainer = Exploding(model=tiny_model, args=config(tmp_path), train_dataset=forget, processing_class=tokenizer)
    with pytest.raises(NonFiniteLossError, match="step 2.*last good weights are saved") as error:
        trainer.train()
    saved = tmp_path / "run" / "last-good"
    assert (saved / "config.json").is_file() and "last-good" in str(error.value)
    weights_after_step_2 = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    reloaded = AutoModelForCausalLM.from_pretrained(saved)
    assert all(not torch.isnan(p).any() for p in reloaded.parameters())
    for name, param in reloaded.named_parameters():
        torch.testing.assert_close(param, weights_after_step_2[name])


def test_retain_sampler_differs_across_ranks_and_repeats_across_resumes(bundle, tokenizer):
    retain = tokenize_completions(sft_dataset(bundle.retain), tokenizer, ["completion"], 512, "retain")
    collator = GroupCollator(tokenizer.pad_token_id, {"forget": "completion"})
    rank0, rank1 = (RetainSampler(retain, collator, 8, seed=0, rank=r) for r in (0, 1))
    assert rank0.indices(5, 0) != rank1.indices(5, 0)
    assert rank0.indices(5, 0) == RetainSampler(retain, collator, 8, seed=0, rank=0).indices(5, 0)
    assert rank0.indices(5, 0) != rank0.indices(6, 0) != rank0.indices(6, 1)
    batch = rank0.draw(5, 0)
    assert set(batch) == {"retain_input_ids", "retain_attention_mask", "retain_completion_mask"}
    assert batch["retain_input_ids"].shape[0] == 8 and len(set(rank0.indices(5, 0))) == 8


def test_trainer_rejects_bad_input_before_training(tmp_path, bundle, tokenizer, tiny_model):
    with pytest.raises(ValueError, match="forget set as `train_dataset`"):
        GATrainer(model=tiny_model, args=config(tmp_path), processing_class=tokenizer)
    with pytest.raises(ValueError, match="empty"):
        GATrainer(
            model=tiny_model,
            args=config(tmp_path),
            train_dataset=Dataset.from_dict({"prompt": [], "completion": []}),
            processing_class=tokenizer,
        )
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['completion'\]"):
        GATrainer(
            model=tiny_model,
            args=config(tmp_path),
            train_dataset=Dataset.from_dict({"prompt": ["a"], "answer": ["b"]}),
            processing_class=tokenizer,
        )
    with pytest.raises(ValueError, match="max_length"):
        GATrainer(
            model=tiny_model,
            args=config(tmp_path, max_length=4),
            train_dataset=sft_dataset(bundle.forget),
            processing_class=tokenizer,
        )
    assert math.isclose(config(tmp_path).retain_batch_size, 4)


def test_evaluation_logs_apart_from_the_training_metrics(tmp_path, bundle, tokenizer, tiny_model):
    """Evaluating between two training logs leaves the steps' training metrics to the next training log."""
    forget = sft_dataset(bundle.forget)
    args = config(tmp_path, max_steps=4, eval_strategy="steps", eval_steps=1, logging_steps=2)
    trainer = GATrainer(
        model=tiny_model, args=args, train_dataset=forget, eval_dataset={"forget": forget}, processing_class=tokenizer
    )
    trainer.train()
    evaluations = [entry for entry in trainer.state.log_history if "eval_forget_prob" in entry]
    assert len(evaluations) == 4
    assert all(set(entry) <= {"eval_forget_prob", "epoch", "step"} for entry in evaluations)
    assert [entry["step"] for entry in trainer.state.log_history if "forget_logp" in entry] == [2, 4]
