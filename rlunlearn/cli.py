"""The `rlunlearn` command line.

    rlunlearn <command> [--option value ...] [--config options.yaml]

Every command takes its options as flags or from a YAML file (TRL's `TrlParser`: flags override the file), and
writes a run folder (`--output_dir`, default runs/<command>-<time>) holding its config, logs and results as JSON.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from trl import ModelConfig, TrlParser

from trainers import METHODS

from .evaluation import evaluate_model
from .finetune import FinetuneConfig
from .models import load_model, load_tokenizer
from .pipeline import (
    CacheArguments,
    DataArguments,
    ScratchModelArguments,
    finetune_models,
    format_table,
    prepare_models,
    unlearn,
)

logger = logging.getLogger("rlunlearn")

# Unlearning hyperparameters of the CPU preset: a 4-layer, hidden-256 model fine-tuned from scratch learns much
# faster than a pretrained LLM forgets, so it needs larger steps than the papers' 1e-5 (measured with `rlunlearn demo`).
CPU_PRESET_UNLEARNING = {
    "ga": {
        "learning_rate": 1.5e-4,
        "num_train_epochs": 5,
        "per_device_train_batch_size": 8,
        "gradient_accumulation_steps": 1,
        "warmup_steps": 0.0,
    },
}
DEMO_COLUMNS = ["model", "forget prob", "forget ROUGE-L", "retain prob", "retain ROUGE-L"]


def _parser(dataclass_types: tuple, prog: str) -> TrlParser:
    return TrlParser(
        dataclass_types,
        prog=prog,
        epilog="Options can also come from a YAML file, `--config options.yaml` (one `option: value` a line); flags "
        "given beside it override the file.",
    )


def _run_folder(output_dir: str | None, command: str) -> Path:
    if output_dir in (None, "", "trainer_output"):
        output_dir = os.path.join("runs", f"{command}-{time.strftime('%Y%m%d-%H%M%S')}")
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _to_json(obj) -> dict:
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    return dataclasses.asdict(obj)


def _write_json(path: Path, content) -> None:
    path.write_text(json.dumps(content, indent=2, default=str))


def _summary_row(name: str, results: dict) -> dict:
    row = {"model": name}
    for split in ("forget", "retain"):
        if split in results:
            row[f"{split} prob"] = results[split]["probability"]
            row[f"{split} ROUGE-L"] = results[split]["rougeL_recall"]
    return row


def _evaluate_folder(path: Path, bundle, fmt, splits=("forget", "retain")) -> dict:
    model = load_model(ModelConfig(model_name_or_path=str(path)), for_training=False)
    return evaluate_model(model, load_tokenizer(str(path)), bundle, fmt, splits)


def _cached_evaluation(folder: Path, name: str, bundle, fmt) -> dict:
    """The evaluation of a cached target/retain model, itself cached next to the model (it never changes)."""
    path = folder / f"eval-{name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    results = _evaluate_folder(folder / name, bundle, fmt)
    _write_json(path, results)
    return results


# ---- demo -----------------------------------------------------------------------------------------------------------


@dataclass
class DemoArguments:
    output_dir: str | None = field(default=None, metadata={"help": "Run folder (default runs/demo-<time>)."})
    method: str = field(default="ga", metadata={"help": "Unlearning method.", "choices": sorted(CPU_PRESET_UNLEARNING)})
    seed: int = field(default=42, metadata={"help": "Seed of fine-tuning and unlearning."})


def demo(argv: list[str]) -> int:
    """Generate fictitious authors, fine-tune a target and a retain model (cached), unlearn, and compare."""
    parser = _parser((DemoArguments, DataArguments, ScratchModelArguments, CacheArguments), "rlunlearn demo")
    demo_args, data_args, scratch_args, cache_args = parser.parse_args_and_config(argv)
    run = _run_folder(demo_args.output_dir, "demo")
    started = time.time()
    bundle = data_args.bundle()
    fmt = data_args.prompt_format()
    print(
        f"Data: {bundle.name}: forget {len(bundle.forget)} answers of {', '.join(bundle.forget_authors)}; "
        f"retain {len(bundle.retain)} answers of {len(bundle.retain_authors)} authors."
    )

    finetune_config = FinetuneConfig(output_dir=str(run / "finetune"), seed=demo_args.seed, report_to="none")
    prepared = prepare_models(bundle, data_args, ModelConfig(), scratch_args, finetune_config, cache_args.cache_dir)
    print(
        f"Target and retain models: {prepared.folder} ({'reused from the cache' if prepared.reused else 'fine-tuned'},"
        f" {time.time() - started:.0f}s)"
    )

    config_class = METHODS[demo_args.method][0]
    unlearn_config = config_class(
        output_dir=str(run / "unlearned"),
        seed=demo_args.seed,
        report_to="none",
        save_strategy="no",
        logging_steps=5,
        **CPU_PRESET_UNLEARNING[demo_args.method],
    )
    unlearn_started = time.time()
    trainer = unlearn(demo_args.method, unlearn_config, prepared.target, bundle, data_args, ModelConfig())
    print(f"Unlearned with {demo_args.method} in {time.time() - unlearn_started:.0f}s.")

    results = {
        "target": _cached_evaluation(prepared.folder, "target", bundle, fmt),
        "retain": _cached_evaluation(prepared.folder, "retain", bundle, fmt),
        "unlearned": evaluate_model(trainer.model, trainer.processing_class, bundle, fmt),
    }
    rows = [_summary_row(name, r) for name, r in results.items()]
    table = format_table(rows, DEMO_COLUMNS)
    seconds = time.time() - started
    print(f"\nProbability of the answer and ROUGE-L recall of the greedy answer ({bundle.name}):\n{table}")
    print(f"\nDone in {seconds:.0f}s. Run folder: {run}")
    _write_json(
        run / "run_config.json",
        {
            "demo": _to_json(demo_args),
            "data": _to_json(data_args),
            "scratch_model": _to_json(scratch_args),
            "unlearning": unlearn_config.to_dict(),
            "bundle": bundle.summary(),
            "models": str(prepared.folder),
        },
    )
    _write_json(
        run / "results.json",
        {"summary": rows, "seconds": round(seconds, 1), "models_reused": prepared.reused, "evaluation": results},
    )
    _write_json(run / "log_history.json", trainer.state.log_history)
    return 0


# ---- finetune -------------------------------------------------------------------------------------------------------


@dataclass
class FinetuneArguments:
    which: str = field(
        default="both", metadata={"help": "Which model to fine-tune.", "choices": ["target", "retain", "both"]}
    )


def finetune_command(argv: list[str]) -> int:
    """Fine-tune the target model (all authors) and the retain model (retain authors only) into the run folder."""
    parser = _parser(
        (FinetuneArguments, DataArguments, ScratchModelArguments, ModelConfig, FinetuneConfig), "rlunlearn finetune"
    )
    args, data_args, scratch_args, model_args, config = parser.parse_args_and_config(argv)
    run = _run_folder(config.output_dir, "finetune")
    config.output_dir = str(run)
    bundle = data_args.bundle()
    which = ("target", "retain") if args.which == "both" else (args.which,)
    _write_json(
        run / "run_config.json",
        {
            "data": _to_json(data_args),
            "scratch_model": _to_json(scratch_args),
            "model": _to_json(model_args),
            "finetune": config.to_dict(),
            "bundle": bundle.summary(),
        },
    )
    seconds = finetune_models(bundle, data_args, model_args, scratch_args, config, run, which)
    results = {name: _evaluate_folder(run / name, bundle, data_args.prompt_format()) for name in which}
    rows = [_summary_row(name, r) for name, r in results.items()]
    print(format_table(rows, DEMO_COLUMNS))
    print(f"Models saved in {', '.join(str(run / name) for name in which)}")
    _write_json(run / "results.json", {"summary": rows, "seconds": seconds, "evaluation": results})
    return 0


# ---- unlearn --------------------------------------------------------------------------------------------------------


@dataclass
class UnlearnArguments:
    method: str = field(default="ga", metadata={"help": "Unlearning method.", "choices": sorted(METHODS)})


def _method_of(argv: list[str]) -> str:
    """The --method given on the command line or in the --config file: it decides which config class parses the rest."""
    method = None
    for i, arg in enumerate(argv):
        if arg == "--method" and i + 1 < len(argv):
            method = argv[i + 1]
        elif arg.startswith("--method="):
            method = arg.split("=", 1)[1]
        elif arg == "--config" and i + 1 < len(argv) and method is None:
            with open(argv[i + 1]) as handle:
                method = (yaml.safe_load(handle) or {}).get("method")
    method = method or UnlearnArguments.method
    if method not in METHODS:
        raise SystemExit(
            f"rlunlearn unlearn: --method {method!r} is not a method; the methods are: {', '.join(METHODS)}."
        )
    return method


def unlearn_command(argv: list[str]) -> int:
    """Unlearn the forget set from a fine-tuned target model (--model_name_or_path) with one method."""
    method = _method_of(argv)
    config_class = METHODS[method][0]
    parser = _parser(
        (UnlearnArguments, DataArguments, ModelConfig, config_class), f"rlunlearn unlearn --method {method}"
    )
    args, data_args, model_args, config = parser.parse_args_and_config(argv)
    if not model_args.model_name_or_path:
        raise SystemExit(
            "rlunlearn unlearn: --model_name_or_path is required: the fine-tuned target model to unlearn from "
            "(e.g. runs/finetune-.../target from `rlunlearn finetune`)."
        )
    run = _run_folder(config.output_dir, "unlearn")
    config.output_dir = str(run)
    bundle = data_args.bundle()
    _write_json(
        run / "run_config.json",
        {
            "method": method,
            "data": _to_json(data_args),
            "model": _to_json(model_args),
            "unlearning": config.to_dict(),
            "bundle": bundle.summary(),
        },
    )
    trainer = unlearn(method, config, model_args.model_name_or_path, bundle, data_args, model_args)
    results = evaluate_model(trainer.model, trainer.processing_class, bundle, data_args.prompt_format())
    rows = [_summary_row(method, results)]
    print(format_table(rows, DEMO_COLUMNS))
    print(f"Unlearned model saved in {run}")
    _write_json(run / "results.json", {"summary": rows, "evaluation": results})
    _write_json(run / "log_history.json", trainer.state.log_history)
    return 0


COMMANDS = {
    "demo": demo,
    "finetune": finetune_command,
    "unlearn": unlearn_command,
}


def _usage() -> str:
    lines = ["usage: rlunlearn <command> [options] [--config options.yaml]", "", "commands:"]
    for name, function in COMMANDS.items():
        lines.append(f"  {name:<10} {function.__doc__.strip().splitlines()[0]}")
    lines += ["", "`rlunlearn <command> --help` lists every option of a command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"rlunlearn: unknown command {command!r}.\n\n{_usage()}", file=sys.stderr)
        return 2
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", level=logging.INFO, datefmt="%H:%M:%S")
    return COMMANDS[command](rest)


if __name__ == "__main__":
    raise SystemExit(main())
