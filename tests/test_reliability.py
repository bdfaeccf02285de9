"""Reliability: a resumed run ends where an uninterrupted one does, the retain-probability guard stops a collapse with
the last good weights kept, and bad input fails before training with a message that names the fix."""

import logging

import pytest
import torch
from conftest import QUIET_TRAINING, mean_probability
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import ModelConfig

from rlunlearn.data import UnlearningBundle, sft_dataset
from rlunlearn.models import check_same_tokenizer, train_tokenizer
from rlunlearn.pipeline import DataArguments, unlearn
from rlunlearn.trainers import (
    DareUConfig,
    GAConfig,
    GATrainer,
    GradDiffConfig,
    GradDiffTrainer,
    RetainCollapseError,
    RevealReleaseConfig,
)


class StopAt(TrainerCallback):
    """Ends training after `step`, as a killed run would (its last checkpoint is the one before)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, bundle, tokenizer, finetuned):
    def run(output_dir, callbacks=(), resume=None):
        args = GradDiffConfig(
            output_dir=str(output_dir),
            learning_rate=1e-3,
            max_steps=6,
            per_device_train_batch_size=4,
            gradient_accumulation_steps=2,
            retain_batch_size=2,
            warmup_steps=2,
            **{**QUIET_TRAINING, "save_strategy": "steps"},
            save_steps=3,
        )
        trainer = GradDiffTrainer(
            model=AutoModelForCausalLM.from_pretrained(finetuned),
            args=args,
            train_dataset=sft_dataset(bundle.forget),
            retain_dataset=sft_dataset(bundle.retain),
            processing_class=tokenizer,
            callbacks=list(callbacks),
        )
        trainer.train(resume_from_checkpoint=resume)
        return {name: param.detach().clone() for name, param in trainer.model.named_parameters()}

    uninterrupted = run(tmp_path / "whole")
    killed = run(tmp_path / "killed", [StopAt(4)])
    resumed = run(tmp_path / "killed", resume=str(tmp_path / "killed" / "checkpoint-3"))
    assert any(not torch.equal(killed[name], value) for name, value in uninterrupted.items())
    for name, value in uninterrupted.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=1e-6)


def test_a_retain_collapse_stops_training_with_the_last_good_weights(tmp_path, bundle, tokenizer, finetuned):
    forget, retain = sft_dataset(bundle.forget), sft_dataset(bundle.retain)
    model = AutoModelForCausalLM.from_pretrained(finetuned)
    floor = mean_probability(model, tokenizer, retain) - 0.1
    args = GAConfig(
        output_dir=str(tmp_path / "run"),
        learning_rate=5e-3,
        num_train_epochs=10,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=1,
        eval_strategy="steps",
        eval_steps=1,
        retain_probability_floor=floor,
        **QUIET_TRAINING,
    )
    trainer = GATrainer(
        model=model,
        args=args,
        train_dataset=forget,
        eval_dataset={"forget": forget, "retain": retain},
        processing_class=tokenizer,
    )
    with pytest.raises(RetainCollapseError, match="below --retain_probability_floor.*last-good") as error:
        trainer.train()
    assert trainer.state.global_step < 50  # it stopped long before the end
    history = [e["eval_retain_prob"] for e in trainer.state.log_history if "eval_retain_prob" in e]
    assert history[-1] < floor <= history[-2]
    kept = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "last-good")
    assert mean_probability(kept, tokenizer, retain) == pytest.approx(history[-2], abs=1e-4)
    assert f"step {trainer.state.global_step - 1}, the last evaluation above" in str(error.value)


def test_bad_guard_settings_fail_before_training(tmp_path, bundle, tokenizer, tiny_model):
    forget = sft_dataset(bundle.forget)
    with pytest.raises(ValueError, match="give eval_dataset=\\{'retain'"):
        GATrainer(
            model=tiny_model,
            args=GAConfig(output_dir=str(tmp_path), retain_probability_floor=0.5, **QUIET_TRAINING),
            train_dataset=forget,
            processing_class=tokenizer,
        )
    with pytest.raises(ValueError, match="between 0 and 1"):
        GATrainer(
            model=tiny_model,
            args=GAConfig(
                output_dir=str(tmp_path), retain_probability_floor=2.0, eval_strategy="steps", **QUIET_TRAINING
            ),
            train_dataset=forget,
            eval_dataset={"retain": forget},
            processing_class=tokenizer,
        )


def test_a_tokenizer_without_pad_token_gets_one_and_says_so(tmp_path, bundle, tokenizer, tiny_model, caplog):
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    unpadded = AutoTokenizer.from_pretrained(tmp_path / "tokenizer")
    unpadded.pad_token = None
    with caplog.at_level(logging.WARNING):
        GATrainer(
            model=tiny_model,
            args=GAConfig(output_dir=str(tmp_path), **QUIET_TRAINING),
            train_dataset=sft_dataset(bundle.forget),
            processing_class=unpadded,
        )
    assert unpadded.pad_token == unpadded.eos_token
    assert "no pad token" in caplog.text


def test_lora_target_modules_that_match_nothing_fail_before_training(tmp_path, bundle, tokenizer, tiny_model):
    with pytest.raises(ValueError, match="not_a_layer"):
        GATrainer(
            model=tiny_model,
            args=GAConfig(output_dir=str(tmp_path), **QUIET_TRAINING),
            train_dataset=sft_dataset(bundle.forget),
            processing_class=tokenizer,
            peft_config=LoraConfig(r=4, target_modules=["not_a_layer"]),
        )


def test_overlapping_forget_and_retain_sets_are_reported(bundle, caplog):
    shared = bundle.forget.select([0])
    with caplog.at_level(logging.WARNING):
        overlapping = UnlearningBundle(
            name="overlap", forget=bundle.forget, retain=Dataset.from_list(list(bundle.retain) + list(shared))
        )
    assert overlapping.summary()["forget_retain_overlap"] == [shared[0]["question"]]
    assert "in both the forget and the retain set" in caplog.text


def test_a_retain_model_with_another_tokenizer_is_refused(tmp_path, bundle, tokenizer):
    other = train_tokenizer(bundle.corpus(), vocab_size=400)
    tokenizer.save_pretrained(tmp_path / "target")
    other.save_pretrained(tmp_path / "retain")
    check_same_tokenizer(str(tmp_path / "target"), str(tmp_path / "target"), "--retain_model")
    with pytest.raises(ValueError, match="--retain_model .* has another tokenizer"):
        check_same_tokenizer(str(tmp_path / "target"), str(tmp_path / "retain"), "--retain_model")


def test_what_a_sharded_run_cannot_do_fails_before_loading(tmp_path, bundle, finetuned, monkeypatch):
    """Under DeepSpeed or FSDP (here FSDP as `accelerate launch` announces it), Reveal-and-Release refuses at once and
    DareU asks for an attribution classifier trained beforehand, instead of training one inside the sharded run."""
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ValueError, match="Reveal-and-Release does not run under FSDP.*multi_gpu.yaml"):
        RevealReleaseConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none")

    config = DareUConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    with pytest.raises(ValueError, match="--attributor is required under FSDP.*rlunlearn train-attributor"):
        unlearn("dareu", config, finetuned, bundle, DataArguments(), ModelConfig())
    assert not (tmp_path / "attributor").exists()
