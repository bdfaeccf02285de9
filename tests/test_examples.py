"""The example scripts end to end in this process: QLoRA (with the DareU reward classifier in 4-bit + LoRA too), the
model card, and the unlearning metrics reported to TensorBoard at eval_steps."""

import json
import runpy
import sys

import pytest
from conftest import REPO, SCRIPT_ARGS
from peft import AutoPeftModelForCausalLM
from transformers import AutoConfig

from rlunlearn.trainers import METHODS


def run_script(method: str, monkeypatch, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", [f"examples/{method}.py", *args])
    runpy.run_path(str(REPO / "examples" / f"{method}.py"), run_name="__main__")


COMMON = [*SCRIPT_ARGS, "--per_device_train_batch_size", "4"]


def test_qlora_end_to_end_with_a_4bit_reward_classifier(tmp_path, finetuned, monkeypatch):
    """DareU with --load_in_4bit --use_peft and no classifier given: the attribution classifier is trained from the
    same model in 4-bit + LoRA, the policy unlearns in 4-bit + LoRA, and the adapter it saves loads with plain peft."""
    output = tmp_path / "dareu"
    run_script(
        "dareu",
        monkeypatch,
        "--model_name_or_path",
        str(finetuned),
        "--output_dir",
        str(output),
        "--load_in_4bit",
        "true",
        "--use_bnb_nested_quant",
        "true",
        "--use_peft",
        "true",
        "--lora_r",
        "16",
        "--lora_target_modules",
        "all-linear",
        "--learning_rate",
        "2e-2",
        "--max_steps",
        "6",
        "--num_generations",
        "4",
        "--max_completion_length",
        "16",
        "--eval_strategy",
        "steps",
        "--eval_steps",
        "6",
        "--eval_on_start",
        "true",
        "--report_to",
        "none",
        "--evaluate",
        "false",
        *COMMON,
    )
    classifier_config = AutoConfig.from_pretrained(output / "attributor")
    assert classifier_config.quantization_config["load_in_4bit"]
    history = json.loads((output / "log_history.json").read_text())
    evaluations = [entry for entry in history if "eval_forget_prob" in entry]
    assert evaluations[-1]["eval_forget_prob"] < evaluations[0]["eval_forget_prob"] - 0.05

    model = AutoPeftModelForCausalLM.from_pretrained(output)
    assert model.peft_config["default"].r == 16
    card = (output / "README.md").read_text()
    assert "library_name: peft" in card and "AutoPeftModelForCausalLM" in card and "Not evaluated" in card


def test_unlearning_metrics_reach_tensorboard(tmp_path, finetuned, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    output = tmp_path / "ga"
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tensorboard"))
    run_script(
        "ga",
        monkeypatch,
        "--model_name_or_path",
        str(finetuned),
        "--output_dir",
        str(output),
        "--learning_rate",
        "1e-3",
        "--max_steps",
        "4",
        "--eval_strategy",
        "steps",
        "--eval_steps",
        "2",
        "--report_to",
        "tensorboard",
        "--evaluate",
        "false",
        *COMMON,
    )
    (events,) = (tmp_path / "tensorboard").rglob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events)).Reload()
    forget = [event.value for event in accumulator.Scalars("eval/forget_prob")]
    assert [event.step for event in accumulator.Scalars("eval/retain_prob")] == [2, 4]
    assert forget[1] < forget[0]  # gradient ascent lowers it step by step
    assert len(accumulator.Scalars("train/loss")) == 4


@pytest.mark.parametrize(
    "bad, message",
    [(["--load_in_4bit", "true"], "--load_in_4bit needs --use_peft"), (["--divergence", "renyi"], "invalid choice")],
)
def test_bad_flags_fail_before_training(tmp_path, finetuned, monkeypatch, capsys, bad, message):
    with pytest.raises((ValueError, SystemExit)) as error:
        run_script("flat", monkeypatch, "--model_name_or_path", str(finetuned), "--output_dir", str(tmp_path), *bad)
    assert message in str(error.value) + capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing trained, nothing saved


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_has_a_launch_script(method, monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_script(method, monkeypatch, "--help")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(flag in out for flag in ("--model_name_or_path", "--learning_rate", "--retain_model", "--load_in_4bit"))
    docstring = (REPO / "examples" / f"{method}.py").read_text()
    assert "accelerate launch --config_file examples/accelerate_configs/" in docstring


@pytest.mark.parametrize(
    "name, engine",
    [
        ("single_gpu", "NO"),
        ("multi_gpu", "MULTI_GPU"),
        ("deepspeed_zero2", "DEEPSPEED"),
        ("deepspeed_zero3", "DEEPSPEED"),
        ("fsdp", "FSDP"),
    ],
)
def test_accelerate_configs_load(name, engine):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(REPO / "examples" / "accelerate_configs" / f"{name}.yaml"))
    assert config.distributed_type == engine
    if name.startswith("deepspeed"):
        assert config.deepspeed_config["zero_stage"] == int(name[-1])
