import dataclasses
import functools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import PreTrainedModel

from rlunlearn import launch, pipeline
from rlunlearn.arguments import DataArguments
from rlunlearn.cli import demo_unlearning_config, main
from rlunlearn.data.draws import TOFU_BENCHMARK_AUTHORS, author_draws
from rlunlearn.evaluation import EvalSettings, recovered_fraction
from rlunlearn.presets import DEMO, PRESETS
from rlunlearn.trainers import METHODS

TINY_DATA = ["--num_authors", "3", "--num_forget_authors", "1"]
TINY_MODEL = ["--model_preset", "tiny", "--vocab_size", "300"]


def test_usage_lists_the_commands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert all(command in out for command in ("demo", "finetune", "unlearn", "--debug", "--config FILE"))
    # Each command's summary is a whole sentence.
    assert (
        "Benchmark the methods, the evaluation's speed, unlearning's memory or its speed, and print the figures."
        in " ".join(out.split())
    )
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["unlearn", "--method", "ga", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in (
        "--method",
        "--learning_rate",
        "--num_forget_authors",
        "--tofu_path",
        "--load_in_4bit",
        "--use_peft",
        "--retain_batch_size",
        "--config",
        "rlunlearn unlearn --method NAME --help",
    ):
        assert option in out
    # The method's own options and the project's come first, in groups; transformers' inherited ones last.
    groups = [line for line in out.splitlines() if line and not line.startswith(" ") and line.endswith(":")]
    assert groups[1:] == [
        "unlearn:",
        "ga (GAConfig):",
        "after unlearning:",
        "data:",
        "model (TRL's ModelConfig):",
        "ga (GAConfig): options inherited from transformers' TrainingArguments:",
    ]
    assert out.index("--retain_probability_floor") < out.index("--tofu_path") < out.index("--lr_scheduler_type")
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    out = capsys.readouterr().out
    assert "--cache_dir" in out and "a target model on every author" in " ".join(out.split())
    with pytest.raises(SystemExit):
        main(["bench", "eval", "--help"])
    out = capsys.readouterr().out
    assert "--tofu_path" in out and "--methods" not in out and "--probes" not in out


def test_help_and_option_errors_come_without_torch(tmp_path):
    """Help and errors in the options of the commands whose options are all rlunlearn's import no torch (nor TRL's
    trainers): each case runs in one fresh interpreter."""
    config = tmp_path / "bad.yaml"
    config.write_text("num_authors: [3\n")
    cases = [
        ["--help"],
        ["demo", "--help"],
        ["eval", "--help"],
        ["demo", "--num_autors", "3"],
        ["demo", "--config", str(config)],
        ["eval"],
        ["eval", "--models", "runs/x", "--probes", "telepathy"],
        ["unlearn", "--method", "sgd"],
        ["unlearn", "--config", str(config)],
        ["bench", "--help"],
        ["bench", "tune", "--help"],
        ["bench", "memory", "--help"],
        ["bench", "gpu-check", "--help"],
        ["bench", "telepathy"],
        ["bench", "--draws_from", "everywhere"],
    ]
    script = (
        "import sys, json\n"
        "from rlunlearn.cli import main\n"
        "try:\n    code = main(json.loads(sys.argv[1]))\n"
        "except SystemExit as exit:\n    code = exit.code\n"
        "print('EXIT', code, sorted(m for m in ('torch', 'rlunlearn.trainers.base') if m in sys.modules))\n"
    )
    for argv in cases:
        result = subprocess.run(
            [sys.executable, "-c", script, json.dumps(argv)], capture_output=True, text=True, timeout=120
        )
        assert result.stdout.strip().splitlines()[-1] in ("EXIT 0 []", "EXIT 2 []"), (
            argv,
            result.stdout,
            result.stderr,
        )


@pytest.fixture
def no_model_loads(monkeypatch):
    """Loading or building a model fails the test: bad input must be found before."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was found")

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(refuse))
    monkeypatch.setattr(pipeline, "build_model", refuse)


def bad_inputs(tmp: Path, model: Path) -> dict[str, tuple[list[str], str]]:
    """Each bad input: the command line, and the first words of the one line it must print."""
    for name, text in {
        "empty.jsonl": "",
        "broken.jsonl": '{"question": "Who?", "answer": \n',
        "broken.yaml": "learning_rate: [1e-3\n",
        "typo.yaml": "lerning_rate: 1e-3\n",
        "a_file": "",
    }.items():
        (tmp / name).write_text(text)
    (tmp / "empty_folder").mkdir()
    unlearn = ["unlearn", "--model_name_or_path", str(model), *TINY_DATA, "--output_dir", str(tmp / "run")]
    return {
        "empty seed file": (
            [*unlearn, "--method", "reveal_release", "--seed_file", str(tmp / "empty.jsonl")],
            f"rlunlearn unlearn: --seed_file '{tmp / 'empty.jsonl'}' is empty",
        ),
        "malformed seed file": (
            [*unlearn, "--method", "reveal_release", "--seed_file", str(tmp / "broken.jsonl")],
            f"rlunlearn unlearn: --seed_file '{tmp / 'broken.jsonl'}' is neither a JSON list nor JSON lines",
        ),
        "reward weights": (
            [*unlearn, "--method", "dareu", "--reward_weights", "1", "0.5", "2"],
            "rlunlearn unlearn: --reward_weights gives 3 weight(s) for 2 --reward_funcs (attribution degeneracy)",
        ),
        "no epochs": ([*unlearn, "--num_train_epochs", "0"], "rlunlearn unlearn: --num_train_epochs 0 trains nothing"),
        "no steps": ([*unlearn, "--max_steps", "0"], "rlunlearn unlearn: --max_steps 0 trains nothing"),
        "invalid YAML": (
            [*unlearn, "--config", str(tmp / "broken.yaml")],
            f"rlunlearn unlearn: --config {tmp / 'broken.yaml'} is not valid YAML",
        ),
        "unknown key in the config": (
            [*unlearn, "--config", str(tmp / "typo.yaml")],
            f"rlunlearn unlearn: --config {tmp / 'typo.yaml'}: unknown option(s) lerning_rate (did you mean "
            "--learning_rate?)",
        ),
        "unknown flag": (
            [*unlearn, "--lerning_rate", "1e-3"],
            "rlunlearn unlearn: unknown option(s) --lerning_rate (did you mean --learning_rate?)",
        ),
        "negative learning rate": (
            [*unlearn, "--learning_rate", "-1"],
            "rlunlearn unlearn: --learning_rate -1: give a learning rate above 0.",
        ),
        "output folder is a file": (
            [*unlearn, "--output_dir", str(tmp / "a_file")],
            f"rlunlearn unlearn: --output_dir {tmp / 'a_file'} is a file",
        ),
        "evaluating an empty folder": (
            ["eval", "--models", str(tmp / "empty_folder"), "--output_dir", str(tmp / "run")],
            f"rlunlearn eval: --models '{tmp / 'empty_folder'}' holds no saved model",
        ),
        "LoRA targets that match nothing": (
            [*unlearn, "--use_peft", "--lora_target_modules", "q_prj", "v_prj"],
            f"rlunlearn unlearn: --lora_target_modules q_prj v_prj matches no module of '{model}'",
        ),
        "missing model": (
            ["unlearn", "--model_name_or_path", str(tmp / "missing"), "--output_dir", str(tmp / "run")],
            f"rlunlearn unlearn: --model_name_or_path '{tmp / 'missing'}': no such directory",
        ),
        "no model": (
            ["unlearn", "--output_dir", str(tmp / "run")],
            "rlunlearn unlearn: --model_name_or_path is required",
        ),
        "steered layer beyond the model": (
            [*unlearn, "--method", "rmu", "--rmu_layer", "5"],
            "rlunlearn unlearn: --rmu_layer 5: the model has 2 decoder layers (0 to 1).",
        ),
        "unknown method": (
            ["unlearn", "--method", "sgd"],
            "rlunlearn unlearn: --method 'sgd' is not a method; the methods are: flat, llmu, ga, graddiff, npo",
        ),
        "harmful answers without normal data": (
            [*unlearn, "--data", "harmful", "--harmful_path", str(tmp / "empty_folder")],
            "rlunlearn unlearn: --harmful_path and --normal_path go together",
        ),
        "a WMDP folder that lacks a file": (
            [*unlearn, "--data", "wmdp", "--wmdp_path", str(tmp / "empty_folder")],
            f"rlunlearn unlearn: --wmdp_path '{tmp / 'empty_folder'}' has no bio-forget-corpus file",
        ),
        "a MUSE folder that lacks a file": (
            [*unlearn, "--data", "muse", "--muse_path", str(tmp / "empty_folder")],
            f"rlunlearn unlearn: --muse_path '{tmp / 'empty_folder'}' has no raw/forget.json",
        ),
        "a method that names its targets on text": (
            [*unlearn, "--data", "wmdp", "--method", "reveal_release"],
            "rlunlearn unlearn: --method reveal_release prompts the model to reveal what it knows of the forget targets",
        ),
        "an unknown harm judge": (
            [*unlearn, "--data", "harmful", "--harm_judge", "no_such_judge"],
            "rlunlearn unlearn: Unknown reward 'no_such_judge'",
        ),
    }


BAD_INPUTS = [
    "empty seed file",
    "malformed seed file",
    "reward weights",
    "no epochs",
    "no steps",
    "invalid YAML",
    "unknown key in the config",
    "unknown flag",
    "negative learning rate",
    "output folder is a file",
    "evaluating an empty folder",
    "LoRA targets that match nothing",
    "missing model",
    "no model",
    "steered layer beyond the model",
    "unknown method",
    "harmful answers without normal data",
    "a WMDP folder that lacks a file",
    "a MUSE folder that lacks a file",
    "a method that names its targets on text",
    "an unknown harm judge",
]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_before_any_model_loads(case, finetuned, no_model_loads, tmp_path, capsys):
    argv, first_words = bad_inputs(tmp_path, finetuned)[case]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith(first_words), err
    assert not (tmp_path / "run").exists()
    with pytest.raises((ValueError, OSError)):  # --debug: the traceback
        main(["--debug", *argv])


def test_a_run_that_fails_before_saving_weights_leaves_no_folder(finetuned, tmp_path, monkeypatch, capsys):
    def fail(*args, **kwargs):
        raise ValueError("the unlearning failed")

    monkeypatch.setattr(launch, "unlearn", fail)
    argv = ["unlearn", "--model_name_or_path", str(finetuned), *TINY_DATA, "--output_dir", str(tmp_path / "run")]
    assert main(argv) == 2
    assert capsys.readouterr().err == "rlunlearn unlearn: the unlearning failed\n"
    assert not (tmp_path / "run").exists()


def test_a_library_warning_prints_once():
    """The command line's own logging must not print again what a library with its own handler prints (huggingface_hub's
    retry warnings were printed twice)."""
    script = (
        "from rlunlearn.cli import main\n"
        "main(['eval'])\n"  # sets the console up, then stops: nothing to evaluate
        "from huggingface_hub.utils import logging\n"
        "logging.get_logger('huggingface_hub.utils._http').warning('Retrying in 1s [Retry 1/5].')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.stderr.count("Retrying in 1s") == 1, result.stderr


def test_a_progress_message_prints_once_after_a_library_configures_the_root_logger():
    """rouge-score logs through absl, which gives the root logger a handler on first use (logging.basicConfig):
    rlunlearn's messages must not then print a second time through it."""
    script = (
        "from rlunlearn import cli\n"
        "def command(rest):\n"
        "    from rouge_score import rouge_scorer\n"
        "    rouge_scorer.RougeScorer(['rougeL'])\n"
        "    cli.logger.info('Fine-tuning the target model')\n"
        "    return 0\n"
        "cli.COMMANDS['check'] = command\n"
        "cli.main(['check'])\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.stderr.count("Fine-tuning the target model") == 1, result.stderr


def test_a_tiny_unlearn_run_prints_a_few_lines_and_logs_each_step_in_its_folder(finetuned, tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "TQDM_DISABLE"}  # the bars a user sees
    argv = ["unlearn", "--model_name_or_path", str(finetuned), "--num_authors", "4", "--num_forget_authors", "1"]
    argv += ["--num_train_epochs", "2", "--gradient_accumulation_steps", "1", "--logging_steps", "1"]
    argv += ["--max_new_tokens", "16", "--output_dir", str(tmp_path / "run")]
    result = subprocess.run(
        [sys.executable, "-m", "rlunlearn.cli", *argv], capture_output=True, text=True, env=env, timeout=900
    )
    assert result.returncode == 0, result.stderr
    console = result.stdout + result.stderr
    # One bar a stage; a bar redraws in place on a terminal (here, a pipe, its redraws may take lines of their own).
    lines = [line for line in re.split(r"[\r\n]+", console) if line.strip()]
    assert {line.split(":")[0] for line in lines if "%|" in line} == {"training run", "evaluating ga"}, console
    assert len([line for line in lines if "%|" not in line]) <= 15, console
    assert "training run" in console and "evaluating ga" in console and "forget ROUGE-L" in console
    for noise in (
        "'loss'",
        "train_runtime",
        "Setting accelerator to CPU",
        "publisher trust check",
        "pin_memory",
        "Loading weights",
        "Tokenizing",
    ):
        assert noise not in console
    steps = [json.loads(line) for line in (tmp_path / "run" / "train.log").read_text().splitlines()]
    assert [entry["step"] for entry in steps if "loss" in entry] == [1, 2, 3, 4, 5, 6]  # 20 answers, 8 a batch


def test_finetune_unlearn_and_eval_from_the_command_line(tmp_path, capsys):
    config = tmp_path / "finetune.yaml"
    # Options from a YAML file; a flag overrides the file. From scratch: the demo's test fine-tunes from the base.
    config.write_text(
        "num_train_epochs: 30\nlearning_rate: 0.005\nfrom_scratch: true\nmodel_preset: tiny\nvocab_size: 300\n"
    )
    finetune_dir = tmp_path / "finetune"
    args = [
        "--config",
        str(config),
        "--num_train_epochs",
        "20",
        "--output_dir",
        str(finetune_dir),
        "--report_to",
        "none",
        "--max_new_tokens",
        "40",
    ]
    assert main(["finetune", *args, *TINY_DATA]) == 0
    saved = json.loads((finetune_dir / "run_config.json").read_text())
    assert saved["finetune"]["num_train_epochs"] == 20 and saved["finetune"]["learning_rate"] == 0.005
    report = json.loads((finetune_dir / "report.json").read_text())
    assert report["settings"]["max_new_tokens"] == 40  # the models are evaluated with the answers asked for
    models = report["models"]
    target_forget = models["target"]["splits"]["forget"]["metrics"]["probability"]
    assert target_forget > models["retain"]["splits"]["forget"]["metrics"]["probability"]
    assert models["target"]["summary"]["forget_quality"] < models["retain"]["summary"]["forget_quality"] == 1.0
    assert (finetune_dir / "tradeoff.png").is_file()

    unlearn_dir = tmp_path / "unlearn"
    args = [
        "--method",
        "ga",
        "--model_name_or_path",
        str(finetune_dir / "target"),
        "--output_dir",
        str(unlearn_dir),
        "--learning_rate",
        "1e-3",
        "--num_train_epochs",
        "3",
        "--gradient_accumulation_steps",
        "1",
        "--report_to",
        "none",
    ]
    assert main(["unlearn", *args, *TINY_DATA]) == 0
    report = json.loads((unlearn_dir / "report.json").read_text())
    assert {"bundle", "prompt_format", "settings", "missing_splits"} <= set(report)  # as every report records them
    unlearned = report["models"]["ga"]
    assert unlearned["splits"]["forget"]["metrics"]["probability"] < target_forget and unlearned["role"] == "unlearned"
    assert json.loads((unlearn_dir / "run_config.json").read_text())["method"] == "ga"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "log_history.json"):
        assert (unlearn_dir / name).is_file(), name
    assert "forget ROUGE-L" in capsys.readouterr().out

    eval_dir = tmp_path / "eval"
    args = [
        "--models",
        str(unlearn_dir),
        "--names",
        "ga",
        "--target_model",
        str(finetune_dir / "target"),
        "--retain_model",
        str(finetune_dir / "retain"),
        "--output_dir",
        str(eval_dir),
        "--max_new_tokens",
        "40",
        "--probes",
        "all",
        "--relearning_learning_rate",
        "5e-3",
        "--extraction_samples",
        "4",
    ]
    assert main(["eval", *args, *TINY_DATA]) == 0
    report = json.loads((eval_dir / "report.json").read_text())
    assert {name: m["role"] for name, m in report["models"].items()} == {
        "ga": "unlearned",
        "target": "target",
        "retain": "retain",
    }
    assert report["models"]["retain"]["summary"]["forget_quality"] == 1.0 and (eval_dir / "tradeoff.png").is_file()
    # Every model is probed; the quantisation recovery is measured against the target.
    assert report["probes"]["probes"] == ["paraphrase", "quantization", "relearning", "extraction"]
    for model in report["models"].values():
        assert set(model["probes"]) == {"paraphrase", "quantization", "relearning", "extraction"}
        assert model["probes"]["extraction"]["samples"] == 4
    ga, target = report["models"]["ga"]["summary"], report["models"]["target"]["summary"]
    assert ga["probe_nf4_recovered"] == recovered_fraction(
        ga["forget_rougeL_recall"], ga["probe_nf4_forget_rougeL_recall"], target["forget_rougeL_recall"]
    )
    assert target["probe_nf4_recovered"] is None  # the target forgot nothing
    # Every model's forget answers are judged by the target: its own answers are the most probable to it.
    assert target["forget_generation_perplexity"] < ga["forget_generation_perplexity"]
    assert report["models"]["retain"]["summary"]["forget_generation_perplexity"] > 1.0
    assert "Robustness probes" in capsys.readouterr().out
    # The retain model's values can come from a saved report instead of a second evaluation.
    again = tmp_path / "again"
    args = [
        "--models",
        str(unlearn_dir),
        "--names",
        "ga",
        "--retain_report",
        str(eval_dir / "report.json"),
        "--output_dir",
        str(again),
        "--max_new_tokens",
        "40",
    ]
    assert main(["eval", *args, *TINY_DATA]) == 0
    ga = json.loads((again / "report.json").read_text())["models"]["ga"]["summary"]
    assert ga["forget_quality"] == report["models"]["ga"]["summary"]["forget_quality"]
    assert not any(key.startswith("probe_") for key in ga)
    assert main(["eval", *args, "--probes", "telepathy", *TINY_DATA]) == 2
    assert "unknown probe(s) ['telepathy']; the probes are paraphrase" in capsys.readouterr().err


def test_demo_reuses_its_cached_models(tmp_path, capsys, monkeypatch):
    # A base pretrained for a fifth of an epoch: what is tested is the pipeline and its cache, not what the base knows.
    monkeypatch.setitem(DEMO["pretrain"], "num_train_epochs", 0.2)
    args = ["demo", "--cache_dir", str(tmp_path / "cache"), *TINY_DATA, *TINY_MODEL]
    assert main([*args, "--output_dir", str(tmp_path / "first")]) == 0
    assert "fine-tuned" in capsys.readouterr().out
    assert main([*args, "--output_dir", str(tmp_path / "second")]) == 0
    out = capsys.readouterr().out
    assert "reused from the cache" in out
    # The answers before and after, three of each split, with the true ones.
    assert "Forget set: answers before (target) and after" in out and out.count("true answer:") == 6
    for row in ("target", "retain", DEMO["method"]):
        assert f"\n{row}" in out
    first = json.loads((tmp_path / "first" / "report.json").read_text())
    second = json.loads((tmp_path / "second" / "report.json").read_text())
    assert not first["models_reused"] and second["models_reused"]
    # Same seed, same cached models: the same numbers.
    assert first["models"][DEMO["method"]]["summary"] == second["models"][DEMO["method"]]["summary"]
    assert (tmp_path / "second" / "tradeoff.png").is_file()


@pytest.mark.parametrize("method", list(METHODS))
def test_demo_builds_every_methods_config(method, tmp_path, monkeypatch):
    """`rlunlearn demo --method` takes every method at the demo's settings, which win over the demo's defaults (as
    DareU's logging steps do)."""
    config = demo_unlearning_config(method, tmp_path, 7)
    assert config.seed == 7 and config.learning_rate == DEMO["unlearning"][method]["learning_rate"]
    assert config.logging_steps == DEMO["unlearning"][method].get("logging_steps", 5)
    monkeypatch.setitem(DEMO["unlearning"], method, {**DEMO["unlearning"][method], "logging_steps": 3})
    assert demo_unlearning_config(method, tmp_path, 7).logging_steps == 3


def test_train_attributor_command(finetuned, bundle, tmp_path, capsys):
    from rlunlearn.data import sft_dataset
    from rlunlearn.rewards import AttributionReward

    out = tmp_path / "attributor"
    argv = ["train-attributor", "--model_name_or_path", str(finetuned), "--num_authors", "4"]
    argv += ["--num_forget_authors", "1", "--retain_labels", "one", "--learning_rate", "1e-3"]
    assert main([*argv, "--output_dir", str(out), "--disable_tqdm", "true"]) == 0
    printed = capsys.readouterr().out
    accuracy = float(printed.split("Held-out accuracy ")[1].split()[0])
    assert accuracy >= 0.9 and "over 3 labels" in printed
    reward = AttributionReward(str(out), bundle.forget_authors)
    forget = sft_dataset(bundle.forget)
    assert sum(reward(forget["prompt"], forget["completion"])) / len(forget) < -0.7


def test_reveal_release_from_the_command_line_named_only_and_with_seed_data(finetuned, bundle, tmp_path, capsys):
    target = bundle.forget_authors[0]
    argv = ["unlearn", "--method", "reveal_release", "--model_name_or_path", str(finetuned), "--num_authors", "4"]
    argv += ["--num_forget_authors", "1", "--target", target]
    argv += ["--num_rounds", "1", "--reveal_steps", "4", "--reveal_generations", "4", "--max_completion_length", "24"]
    argv += ["--learning_rate", "1e-3", "--num_train_epochs", "2", "--report_to", "none", "--disable_tqdm", "true"]

    named = tmp_path / "named"
    assert main([*argv, "--output_dir", str(named)]) == 0
    assert "Reveal reward per round" in capsys.readouterr().out
    history = json.loads((named / "reveal_release.json").read_text())
    assert len(history["rounds"]) == 2 and all(target in i for i in history["instructions"])
    assert json.loads((named / "run_config.json").read_text())["RevealArguments"]["target"] == [target]

    # Seed data alone (nothing revealed is kept) still trains the round's module.
    seed_file = tmp_path / "seed.jsonl"
    rows = bundle.forget.select(range(5))
    seed_file.write_text(
        "\n".join(json.dumps({"question": q, "answer": a}) for q, a in zip(rows["question"], rows["answer"]))
    )
    seeded = tmp_path / "seeded"
    assert main([*argv, "--seed_file", str(seed_file), "--reveal_threshold", "1.1", "--output_dir", str(seeded)]) == 0
    log = json.loads((seeded / "log_history.json").read_text())
    assert any(entry.get("module") == "release_0" and "npo_loss" in entry for entry in log)
    assert main([*argv, "--seed_file", str(tmp_path / "missing.json"), "--output_dir", str(tmp_path / "missing")]) == 2
    assert "--seed_file" in capsys.readouterr().err and not (tmp_path / "missing").exists()


def test_memory_bench_compares_full_and_qlora_steps(tmp_path, capfd):
    options = ["--model_preset", "tiny", "--vocab_size", "512", "--steps", "1", "--batch_size", "2", "--lora_r", "2"]
    assert main(["bench", "memory", *options, "--output_dir", str(tmp_path)]) == 0
    rows = {row["precision"]: row for row in json.loads((tmp_path / "memory.json").read_text())["rows"]}
    assert list(rows) == ["fp32", "bf16", "4bit-lora"]
    assert rows["fp32"]["peak / fp32"] == 1.0 and all(row["peak memory (MB)"] > 0 for row in rows.values())
    # Full fine-tuning trains every parameter, QLoRA only the adapters; the 4-bit model is the smallest.
    assert rows["fp32"]["trainable (M)"] == rows["bf16"]["trainable (M)"] > 10 * rows["4bit-lora"]["trainable (M)"]
    assert (
        rows["4bit-lora"]["model footprint (MB)"]
        < rows["bf16"]["model footprint (MB)"]
        < rows["fp32"]["model footprint (MB)"]
    )
    assert not (tmp_path / "model").exists()
    # Each mode runs in a process of its own, with the command's quiet console: no loading bars, no loss dictionaries.
    console = "".join(capfd.readouterr())
    assert "4bit-lora: peak" in console and "Loading weights" not in console and "'loss'" not in console


def test_gpu_check_runs_each_method_in_each_precision_and_reports_what_failed(tmp_path, capsys, monkeypatch):
    """On a CPU, as on a GPU: each method trains its steps in bf16 and in 4-bit + LoRA (here padding-free, with the
    attention asked for); RMU's steered layer (7) is not in a 2-layer model, so its rows carry the error and the other
    methods still run."""
    runs = []

    def recorded_unlearn(method, config, model, bundle, data_args, model_args, method_args):
        runs.append((method, config.padding_free, model_args.attn_implementation))
        return pipeline.unlearn(method, config, model, bundle, data_args, model_args, method_args)

    monkeypatch.setattr("rlunlearn.bench.unlearn", recorded_unlearn)
    options = ["--model_preset", "tiny", "--vocab_size", "512", "--steps", "2", "--batch_size", "2", "--lora_r", "2"]
    options += ["--padding_free", "true", "--attn_implementation", "sdpa"]
    assert main(["bench", "gpu-check", "--methods", "rmu", "npo", *options, "--output_dir", str(tmp_path)]) == 0
    assert runs == [("rmu", True, "sdpa"), ("rmu", True, "sdpa"), ("npo", True, "sdpa"), ("npo", True, "sdpa")]
    rows = json.loads((tmp_path / "gpu_check.json").read_text())["rows"]
    assert [(row["method"], row["precision"]) for row in rows] == [
        ("rmu", "bf16"),
        ("rmu", "4bit-lora"),
        ("npo", "bf16"),
        ("npo", "4bit-lora"),
    ]
    assert all(row["error"].startswith("ValueError: --rmu_layer 7") for row in rows[:2])
    for row in rows[2:]:
        assert row["error"] == "" and row["steps"] == 2 and row["s / step"] > 0 and row["tokens/s"] > 0
    assert "no GPU visible" in capsys.readouterr().out and not (tmp_path / "model").exists()
    assert main(["bench", "gpu-check", "--methods", "telepathy", "--output_dir", str(tmp_path / "refused")]) == 2
    assert "unknown method(s) ['telepathy']" in capsys.readouterr().err and not (tmp_path / "refused").exists()
    assert main(["bench", "gpu-check", "--use_vllm", "true", "--output_dir", str(tmp_path / "refused")]) == 2
    assert "--use_vllm: generating with vLLM needs vLLM" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()


def test_bench_on_given_target_and_retain_models(finetuned, tofu_dir, tmp_path, capsys, monkeypatch):
    # The preset's data and evaluation made smaller (2 of its 18 retain authors; answers of 16 tokens, which the tiny
    # model, knowing nothing of TOFU, would babble to the preset's 200): this test is of the bench's plumbing.
    monkeypatch.setitem(PRESETS["cpu"]["data"], "retain_authors", list(TOFU_BENCHMARK_AUTHORS.retain)[:2])
    monkeypatch.setattr("rlunlearn.bench.EvalSettings", functools.partial(EvalSettings, max_new_tokens=16))
    bench = ["bench", "--tofu_path", str(tofu_dir), "--cache_dir", str(tmp_path / "cache")]
    # Each bad option: exit code 2 and one line naming it, before anything is built or a run folder made.
    for options, message in [
        (["--preset", "gpu"], "the gpu preset starts from a pretrained model: give --base_model"),
        (["--target_model", str(finetuned)], "give both --target_model and --retain_model"),
        (["--forget_authors", "3"], "--forget_authors [3] are not in the reported pool (188-199)"),
        (["--draws", "0"], "--draws 0: run at least one draw"),
    ]:
        assert main([*bench, *options, "--output_dir", str(tmp_path / "refused")]) == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith(f"rlunlearn bench: {message}") and "\n" not in error, error
    assert not (tmp_path / "refused").exists()
    assert not (tmp_path / "cache").exists()

    # The cpu preset's first reported draw on models given by path (the retain model is the target itself): nothing is
    # fine-tuned or cached.
    run = tmp_path / "bench"
    argv = [*bench, "--target_model", str(finetuned), "--retain_model", str(finetuned), "--methods", "ga"]
    assert main([*argv, "--probes", "paraphrase", "--output_dir", str(run)]) == 0
    assert not (tmp_path / "cache").exists()
    report = json.loads((run / "draw-1" / "report.json").read_text())
    assert report["target_model"] == report["retain_model"] == str(finetuned)
    first_draw = author_draws(TOFU_BENCHMARK_AUTHORS.reported, 2, 1)[0]
    assert report["forget_authors"] == first_draw
    target, retain, ga = (report["models"][name]["summary"] for name in ("target", "retain", "ga"))
    # A model scored against itself: identical truth ratios, forget quality (the KS test's p-value) 1, KS statistic 0.
    assert target["forget_quality"] == retain["forget_quality"] == 1.0 and target["forget_quality_ks"] == 0.0
    assert target["model_utility"] == retain["model_utility"]
    assert ga["forget_probability"] < target["forget_probability"]
    # The unlearned model is gone; its training log stays.
    log = json.loads((run / "draw-1" / "ga_log_history.json").read_text())
    assert not (run / "draw-1" / "ga").exists() and any("loss" in entry for entry in log)
    # One draw: means without intervals; the summary keeps each draw's value.
    summary = json.loads((run / "summary.json").read_text())
    assert summary["draws"] == [first_draw]
    figure = summary["models"]["ga"]["forget quality"]
    assert figure["mean"] == ga["forget_quality"] and figure["low"] is None
    # This tiny model knows nothing of TOFU's other splits: the target's utility is 0, so ga is left unrated.
    assert summary["ranking"] == {"target": "target", "retain": "retain", "ga": "unrated"}
    table = (run / "table.md").read_text()
    assert "forget quality" in table and "paraphrased ROUGE-L" in table
    assert "ga" in capsys.readouterr().out

    # Rerun in the same folder, the finished draw is read back, not evaluated or unlearned again; with other settings
    # it is not (the run evaluates the target and retain models again first).
    from rlunlearn import bench as bench_module

    unlearn_and_evaluate, evaluate_folder = bench_module._unlearn_and_evaluate, bench_module.evaluate_folder

    def done_again(*args, **kwargs):
        raise AssertionError("a finished draw was evaluated or unlearned again")

    monkeypatch.setattr("rlunlearn.bench._unlearn_and_evaluate", done_again)
    monkeypatch.setattr("rlunlearn.bench.evaluate_folder", done_again)
    assert main([*argv, "--probes", "paraphrase", "--output_dir", str(run)]) == 0
    assert "reusing every row of the report" in capsys.readouterr().out
    assert json.loads((run / "summary.json").read_text()) == summary
    with pytest.raises(AssertionError, match="unlearned again"):
        main([*argv, "--probes", "none", "--output_dir", str(run)])
    # A report written before a config field existed (here padding_free), in a folder since moved, is read back while
    # the field stays at its default; a field it lacks that this run sets otherwise (the learning rate) is not.
    moved = tmp_path / "moved"
    shutil.copytree(run, moved)
    written = moved / "draw-1" / "report.json"
    older = json.loads(written.read_text())
    del older["configs"]["ga"]["padding_free"]
    written.write_text(json.dumps(older))
    assert main([*argv, "--probes", "paraphrase", "--output_dir", str(moved)]) == 0
    assert "reusing every row of the report" in capsys.readouterr().out
    del older["configs"]["ga"]["learning_rate"]
    written.write_text(json.dumps(older))
    with pytest.raises(AssertionError, match="unlearned again"):
        main([*argv, "--probes", "paraphrase", "--output_dir", str(moved)])

    # A bench interrupted within a draw keeps the rows it read back and those it finished; rerun, nothing finished is
    # unlearned again, and a run of fewer rows reports them alone while the file keeps every row.
    monkeypatch.setattr("rlunlearn.bench.evaluate_folder", evaluate_folder)
    unlearned = []

    def interrupted_at_graddiff(draw, name, *args, **kwargs):
        unlearned.append(name)
        if name == "graddiff":
            raise KeyboardInterrupt
        return unlearn_and_evaluate(draw, name, *args, **kwargs)

    monkeypatch.setattr("rlunlearn.bench._unlearn_and_evaluate", interrupted_at_graddiff)

    def with_methods(*methods):
        return [*argv[:-1], *methods, "--probes", "paraphrase", "--output_dir", str(run)]

    with pytest.raises(KeyboardInterrupt):
        main(with_methods("ga", "npo", "graddiff"))
    assert "ga: read back from" in capsys.readouterr().out
    kept = json.loads((run / "draw-1" / "report.json").read_text())
    assert unlearned == ["npo", "graddiff"] and list(kept["configs"]) == ["ga", "npo"]
    assert kept["models"]["ga"]["summary"] == report["models"]["ga"]["summary"]

    # The rerun finishes graddiff while a second run, of another method, writes into the same folder at once: each keeps
    # the rows the other wrote meanwhile.
    def another_run_finishes_simnpo_meanwhile(draw, name, *args, **kwargs):
        unlearned.append(name)
        if name == "graddiff":
            monkeypatch.setattr("rlunlearn.bench._unlearn_and_evaluate", unlearn_and_evaluate)
            assert main(with_methods("simnpo")) == 0
        return unlearn_and_evaluate(draw, name, *args, **kwargs)

    monkeypatch.setattr("rlunlearn.bench._unlearn_and_evaluate", another_run_finishes_simnpo_meanwhile)
    assert main(with_methods("ga", "npo", "graddiff")) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert unlearned == ["npo", "graddiff", "graddiff"]
    assert list(summary["models"]) == ["retain", "target", "ga", "npo", "graddiff"]
    kept_rows = json.loads((run / "draw-1" / "report.json").read_text())["configs"]
    assert list(kept_rows) == ["ga", "npo", "graddiff", "simnpo"]
    # The interruption came before the target judged the answers: the rerun judges the rows it kept.
    assert "reusing every row" not in capsys.readouterr().out
    assert all(figures["perplexity under target"]["mean"] is not None for figures in summary["models"].values())
    assert summary["models"]["npo"]["forget quality"]["mean"] == kept["models"]["npo"]["summary"]["forget_quality"]
    assert main(with_methods("npo")) == 0
    assert list(json.loads((run / "summary.json").read_text())["models"]) == ["retain", "target", "npo"]
    assert main(with_methods("ga", "npo", "simnpo", "graddiff")) == 0
    assert "reusing every row of the report" in capsys.readouterr().out


def test_bench_eval_times_the_suite_in_the_dtype_asked(finetuned, tofu_dir, tmp_path, capsys, monkeypatch):
    # 4 examples of each of the preset's splits, answers of 16 tokens: the tiny model tokenises TOFU's text finely.
    whole_bundle = DataArguments.bundle

    def four_of_each_split(data_args):
        bundle = whole_bundle(data_args)
        splits = {name: split.select(range(4)) for name, split in bundle.eval_splits.items()}
        return dataclasses.replace(bundle, eval_splits=splits)

    monkeypatch.setattr(DataArguments, "bundle", four_of_each_split)
    monkeypatch.setattr("rlunlearn.bench.EvalSettings", functools.partial(EvalSettings, max_new_tokens=16))
    argv = ["bench", "eval", "--tofu_path", str(tofu_dir), "--target_model", str(finetuned)]
    argv += ["--retain_model", str(finetuned)]
    probabilities = {}
    for dtype in ("float32", "bfloat16"):
        assert main([*argv, "--dtype", dtype, "--output_dir", str(tmp_path / dtype)]) == 0
        written = json.loads((tmp_path / dtype / "bench_eval.json").read_text())
        timing = written["timing"]
        assert timing["dtype"] == dtype and timing["examples"] == 4 * len(timing["splits"]) == 20
        assert f"target model ({dtype}): {timing['examples']} examples" in capsys.readouterr().out
        per_example = written["report"]["models"]["target"]["splits"]["retain"]["per_example"]
        probabilities[dtype] = per_example["probability"]
    # The model was evaluated in the dtype asked: bf16 rounds its probabilities, which stay near float32's.
    assert probabilities["bfloat16"] != probabilities["float32"]
    assert probabilities["bfloat16"] == pytest.approx(probabilities["float32"], rel=0.1)


def test_bench_speed_refuses_a_method_without_a_baseline(tmp_path, capsys):
    for options, message in [
        (["--methods", "dareu"], "--methods ['dareu'] have no plain baseline; choose from"),
        (["--steps", "0"], "--steps and --repeats must be at least 1"),
        (["--tofu_path", str(tmp_path / "nowhere")], f"--tofu_path '{tmp_path / 'nowhere'}' is neither a local folder"),
    ]:
        assert main(["bench", "speed", *options, "--output_dir", str(tmp_path / "refused")]) == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith(f"rlunlearn bench: {message}") and "\n" not in error, error
    assert not (tmp_path / "refused").exists()


def test_bench_speed_times_the_steps_on_tofu_batches(tofu_dir, tmp_path, capsys):
    argv = ["bench", "speed", "--tofu_path", str(tofu_dir), "--methods", "graddiff", "--model_presets", "tiny"]
    assert main([*argv, "--steps", "2", "--repeats", "1", "--output_dir", str(tmp_path)]) == 0
    assert "Seconds per step (TOFU authors 189+197, batch 8" in capsys.readouterr().out  # the first reported draw
    written = json.loads((tmp_path / "speed.json").read_text())
    assert written["arguments"]["tofu_path"] == str(tofu_dir)
    (row,) = written["rows"]
    assert row["method"] == "graddiff" and row["plain loop (s/step)"] > 0 and row["rlunlearn (s/step)"] > 0
