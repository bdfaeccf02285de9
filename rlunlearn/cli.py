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

from rlunlearn.trainers import METHODS

from .attribution import AttributorConfig, train_attributor
from .bench import DEMO, TASKS
from .evaluation import (
    PROBE_COLUMNS,
    RETAIN,
    TARGET,
    UNLEARNED,
    EvalSettings,
    ProbeSettings,
    build_report,
    evaluate_folder,
    evaluate_model,
    has_probes,
    plot_tradeoff,
    resolve_probes,
    retain_from_report,
    summary_table,
)
from .finetune import FinetuneConfig
from .launch import ScriptArguments, run_unlearning
from .models import check_same_tokenizer
from .pipeline import (
    CacheArguments,
    DataArguments,
    ScratchModelArguments,
    extra_inputs_of,
    finetune_models,
    offline_base,
    prepare_models,
    report_info,
    unlearn,
)
from .pretrain import PretrainConfig, cached_base, pretrain, pretraining_corpus

logger = logging.getLogger("rlunlearn")


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
    return obj.to_dict() if hasattr(obj, "to_dict") else dataclasses.asdict(obj)


def _write_json(path: Path, content) -> None:
    path.write_text(json.dumps(content, indent=2, default=str))


def _write_report(run: Path, report: dict, title: str) -> None:
    _write_json(run / "report.json", report)
    plot_tradeoff(report, run / "tradeoff.png", title)
    print(f"\n{title}\n{summary_table(report)}")
    if has_probes(report):
        print(f"\nRobustness probes (forget split)\n{summary_table(report, PROBE_COLUMNS)}")
    missing = {
        name: m["summary"]["model_utility_missing"]
        for name, m in report["models"].items()
        if m["summary"].get("model_utility_missing")
    }
    if missing:
        print(f"Model utility leaves out what the data lacks: {missing}")
    print(f"\nReport: {run / 'report.json'}; plot: {run / 'tradeoff.png'}")


# ---- demo -----------------------------------------------------------------------------------------------------------


@dataclass
class DemoArguments:
    output_dir: str | None = field(default=None, metadata={"help": "Run folder (default runs/demo-<time>)."})
    method: str = field(
        default=DEMO["method"],
        metadata={"help": "Unlearning method (with the demo's settings).", "choices": sorted(METHODS)},
    )
    seed: int = field(default=42, metadata={"help": "Seed of fine-tuning and unlearning."})


def _side_by_side(bundle, results: dict, method: str, split: str, count: int = 3) -> str:
    """The first `count` questions of a split with the true answer and the target's and `method`'s answers."""
    data = bundle.eval_splits[split]
    lines = []
    for i in range(min(count, len(data))):
        lines += [
            f"  Q: {data[i]['question']}",
            f"     true answer: {data[i]['answer']}",
            f"     target:      {results[TARGET]['splits'][split]['generations'][i]}",
            f"     {method + ':':<12} {results[method]['splits'][split]['generations'][i]}",
        ]
    return "\n".join(lines)


def demo(argv: list[str]) -> int:
    """Forget two fictitious authors: pretrain a small base, fine-tune target and retain models (all cached),
    unlearn, and show the answers before and after beside the TOFU metrics."""
    parser = _parser((DemoArguments, DataArguments, ScratchModelArguments, CacheArguments), "rlunlearn demo")
    demo_args, data_args, scratch_args, cache_args = parser.parse_args_and_config(argv)
    run = _run_folder(demo_args.output_dir, "demo")
    started = time.time()
    bundle = data_args.bundle()
    fmt = data_args.prompt_format()
    settings = EvalSettings()
    print(
        f"Data: {bundle.name}: forget {len(bundle.forget)} answers of {', '.join(bundle.forget_authors)}; "
        f"retain {len(bundle.retain)} answers of {len(bundle.retain_authors)} authors."
    )
    pretrain_config = PretrainConfig(output_dir="unused", report_to="none", seed=demo_args.seed, **DEMO["pretrain"])
    base = offline_base(data_args, scratch_args, cache_args.cache_dir, pretrain_config)
    print(f"Base model: {base or 'none (from scratch)'} ({time.time() - started:.0f}s)")
    finetune_config = FinetuneConfig(
        output_dir=str(run / "finetune"), seed=demo_args.seed, report_to="none", **(DEMO["finetune"] if base else {})
    )
    prepared = prepare_models(
        bundle, data_args, ModelConfig(model_name_or_path=base), scratch_args, finetune_config, cache_args.cache_dir
    )
    print(
        f"Target and retain models: {prepared.target.parent} ("
        f"{'reused from the cache' if prepared.reused else 'fine-tuned'}, {time.time() - started:.0f}s)"
    )

    unlearn_config = METHODS[demo_args.method][0](
        output_dir=str(run / "unlearned"),
        seed=demo_args.seed,
        report_to="none",
        save_strategy="no",
        logging_steps=5,
        **DEMO["unlearning_common"],
        **DEMO["unlearning"].get(demo_args.method, {}),
    )
    unlearn_started = time.time()
    trainer = unlearn(demo_args.method, unlearn_config, prepared.target, bundle, data_args, ModelConfig())
    print(f"Unlearned with {demo_args.method} in {time.time() - unlearn_started:.0f}s.")

    results = {
        RETAIN: evaluate_folder(prepared.retain, bundle, fmt, settings, cache=True),
        TARGET: evaluate_folder(prepared.target, bundle, fmt, settings, cache=True),
        demo_args.method: evaluate_model(trainer.model, trainer.processing_class, bundle, fmt, settings=settings),
    }
    roles = {TARGET: TARGET, RETAIN: RETAIN, demo_args.method: UNLEARNED}
    report = build_report(
        results,
        roles,
        results[RETAIN],
        {
            **report_info(bundle, data_args, settings),
            "seconds": round(time.time() - started, 1),
            "models_reused": prepared.reused,
        },
    )
    _write_json(
        run / "run_config.json",
        {
            "demo": _to_json(demo_args),
            "data": _to_json(data_args),
            "scratch_model": _to_json(scratch_args),
            "base_model": base,
            "unlearning": unlearn_config.to_dict(),
            "target_model": str(prepared.target),
            "retain_model": str(prepared.retain),
        },
    )
    _write_json(run / "log_history.json", trainer.state.log_history)
    print(f"\nForget set: answers before (target) and after ({demo_args.method})")
    print(_side_by_side(bundle, results, demo_args.method, "forget"))
    print(f"\nRetain set: answers before (target) and after ({demo_args.method})")
    print(_side_by_side(bundle, results, demo_args.method, "retain"))
    _write_report(run, report, f"{bundle.name}: target, retain and {demo_args.method}-unlearned models")
    print(f"Done in {time.time() - started:.0f}s. Run folder: {run}")
    return 0


# ---- pretrain -------------------------------------------------------------------------------------------------------


def pretrain_command(argv: list[str]) -> int:
    """Pretrain the offline base model on text that shares no author with the data's benchmark (cached, resumable)."""
    parser = _parser((DataArguments, ScratchModelArguments, PretrainConfig, CacheArguments), "rlunlearn pretrain")
    data_args, scratch_args, config, cache_args = parser.parse_args_and_config(argv)
    corpus = pretraining_corpus(data_args)
    print(f"Pretraining corpus: {len(corpus)} question-answer texts ({data_args.data}).")
    started = time.time()
    if config.output_dir in (None, "", "trainer_output"):
        folder, reused = cached_base(
            corpus,
            config,
            cache_args.cache_dir,
            scratch_args.model_preset,
            scratch_args.architecture,
            scratch_args.vocab_size,
            data_args.prompt_format(),
        )
    else:  # a folder of the user's: resumes from its checkpoints, not cached
        folder, reused = (
            pretrain(
                corpus,
                config,
                scratch_args.model_preset,
                scratch_args.architecture,
                scratch_args.vocab_size,
                data_args.prompt_format(),
            ),
            False,
        )
    print(
        f"Base model {'reused from the cache' if reused else f'pretrained in {time.time() - started:.0f}s'}: {folder}\n"
        f"Fine-tune target and retain models from it: `rlunlearn finetune --model_name_or_path {folder} ...`"
    )
    return 0


# ---- finetune -------------------------------------------------------------------------------------------------------


@dataclass
class FinetuneArguments:
    which: str = field(
        default="both", metadata={"help": "Which model to fine-tune.", "choices": ["target", "retain", "both"]}
    )


def finetune_command(argv: list[str]) -> int:
    """Fine-tune the target model (all authors) and the retain model (retain authors only) into the run folder, from
    --model_name_or_path or the offline pretrained base."""
    parser = _parser(
        (FinetuneArguments, DataArguments, ScratchModelArguments, ModelConfig, FinetuneConfig, CacheArguments),
        "rlunlearn finetune",
    )
    args, data_args, scratch_args, model_args, config, cache_args = parser.parse_args_and_config(argv)
    run = _run_folder(config.output_dir, "finetune")
    config.output_dir = str(run)
    bundle = data_args.bundle()
    if not model_args.model_name_or_path:
        model_args.model_name_or_path = offline_base(data_args, scratch_args, cache_args.cache_dir)
    settings = EvalSettings()
    which = ("target", "retain") if args.which == "both" else (args.which,)
    _write_json(
        run / "run_config.json",
        {
            "data": _to_json(data_args),
            "scratch_model": _to_json(scratch_args),
            "model": _to_json(model_args),
            "finetune": config.to_dict(),
        },
    )
    seconds = finetune_models(bundle, data_args, model_args, scratch_args, config, run, which)
    results = {name: evaluate_folder(run / name, bundle, data_args.prompt_format(), settings) for name in which}
    report = build_report(
        results,
        {name: name for name in which},
        results.get(RETAIN),
        {**report_info(bundle, data_args, settings), "seconds": seconds},
    )
    _write_report(run, report, f"{bundle.name}: fine-tuned models")
    print(f"Models saved in {', '.join(str(run / name) for name in which)}")
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
    # The options a method reads beyond its config: DareU's rewards, Reveal-and-Release's target.
    extra = extra_inputs_of(method)
    dataclass_types = (
        UnlearnArguments,
        ScriptArguments,
        DataArguments,
        ModelConfig,
        config_class,
        *((extra.arguments,) if extra else ()),
    )
    parser = _parser(dataclass_types, f"rlunlearn unlearn --method {method}")
    args, script_args, data_args, model_args, config, *method_args = parser.parse_args_and_config(argv)
    if not model_args.model_name_or_path:
        raise SystemExit(
            "rlunlearn unlearn: --model_name_or_path is required: the fine-tuned target model to unlearn from "
            "(e.g. runs/finetune-.../target from `rlunlearn finetune`)."
        )
    run = _run_folder(config.output_dir, "unlearn")
    config.output_dir = str(run)
    _write_json(
        run / "run_config.json",
        {
            "method": method,
            "script": _to_json(script_args),
            "data": _to_json(data_args),
            "model": _to_json(model_args),
            "unlearning": config.to_dict(),
            **{type(extra).__name__: _to_json(extra) for extra in method_args},
        },
    )
    trainer, report = run_unlearning(method, script_args, data_args, model_args, config, *method_args)
    if method == "reveal_release":
        print(f"Reveal reward per round (bandit history in {run / 'reveal_release.json'}):")
        for record in trainer.rounds:
            print(f"  round {record['round']}: {record['reveal_reward']:.3f}, {record['revealed']} answers revealed")
    if report is not None:
        _write_report(run, report, f"{report['bundle']['name']}: {method}")
    print(f"Unlearned model and its card (README.md) saved in {run}.")
    return 0


# ---- eval -----------------------------------------------------------------------------------------------------------


@dataclass
class EvalArguments:
    models: list[str] = field(default_factory=list, metadata={"help": "Folders of (unlearned) models to evaluate."})
    names: list[str] = field(
        default_factory=list, metadata={"help": "Names of --models in the report (default: folder names)."}
    )
    target_model: str | None = field(
        default=None, metadata={"help": "The model before unlearning (marked in the plot)."}
    )
    retain_model: str | None = field(
        default=None, metadata={"help": "The retain model: forget quality, privleak and Tug-of-War compare with it."}
    )
    retain_report: str | None = field(
        default=None, metadata={"help": "Instead of --retain_model: a report.json of `rlunlearn eval` holding it."}
    )
    dtype: str = field(
        default="float32",
        metadata={"help": "dtype the models are loaded in.", "choices": ["float32", "bfloat16", "float16"]},
    )
    max_new_tokens: int = field(default=200, metadata={"help": "Longest greedy answer (TOFU: 200)."})
    eval_batch_size: int = field(default=64, metadata={"help": "Examples a forward pass."})
    probes: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Robustness probes run on every model: paraphrase, quantization, relearning, extraction, or all "
            "(options: the --relearning_* and --extraction_* flags)."
        },
    )
    output_dir: str | None = field(default=None, metadata={"help": "Run folder (default runs/eval-<time>)."})


def eval_command(argv: list[str]) -> int:
    """Evaluate models on a dataset's splits: TOFU and MUSE metrics, membership inference, a report and a plot."""
    parser = _parser((EvalArguments, DataArguments, ProbeSettings), "rlunlearn eval")
    args, data_args, probe_settings = parser.parse_args_and_config(argv)
    try:
        probes = resolve_probes(args.probes)
    except ValueError as error:
        raise SystemExit(f"rlunlearn eval: {error}") from None
    if args.retain_model and args.retain_report:
        raise SystemExit("rlunlearn eval: give --retain_model or --retain_report, not both.")
    if args.names and len(args.names) != len(args.models):
        raise SystemExit(
            f"rlunlearn eval: {len(args.names)} --names for {len(args.models)} --models; give one name a model."
        )
    models = dict(zip(args.names or [Path(m).name for m in args.models], args.models))
    roles = dict.fromkeys(models, UNLEARNED)
    if args.target_model:
        models[TARGET], roles[TARGET] = args.target_model, TARGET
    if args.retain_model:
        models[RETAIN], roles[RETAIN] = args.retain_model, RETAIN
    if not models:
        raise SystemExit("rlunlearn eval: nothing to evaluate; give --models, --target_model or --retain_model.")
    for name, path in models.items():
        if not Path(path).expanduser().is_dir():
            raise SystemExit(f"rlunlearn eval: the model {name!r} at {path!r} is not a folder.")
    if args.retain_model:
        for name, path in models.items():
            if name != RETAIN:
                check_same_tokenizer(path, args.retain_model, "--retain_model")
    run = _run_folder(args.output_dir, "eval")
    bundle, fmt = data_args.bundle(), data_args.prompt_format()
    settings = EvalSettings(args.max_new_tokens, args.eval_batch_size)
    retain = retain_from_report(args.retain_report) if args.retain_report else None
    _write_json(
        run / "run_config.json",
        {"eval": _to_json(args), "data": _to_json(data_args), "probes": _to_json(probe_settings)},
    )
    results = {}
    for name, path in models.items():
        started = time.time()
        results[name] = evaluate_folder(
            path, bundle, fmt, settings, args.dtype, probes=probes, probe_settings=probe_settings
        )
        print(f"Evaluated {name} in {time.time() - started:.0f}s")
    retain = results.get(RETAIN, retain)
    info = report_info(bundle, data_args, settings)
    if probes:
        info["probes"] = {"probes": list(probes), **dataclasses.asdict(probe_settings)}
    report = build_report(results, roles, retain, info)
    _write_report(run, report, bundle.name)
    return 0


# ---- train-attributor -----------------------------------------------------------------------------------------------


def train_attributor_command(argv: list[str]) -> int:
    """Train DareU's attribution classifier (whose data is this text?) from a causal LM; prints held-out accuracy."""
    parser = _parser((DataArguments, ModelConfig, AttributorConfig), "rlunlearn train-attributor")
    data_args, model_args, config = parser.parse_args_and_config(argv)
    if not model_args.model_name_or_path:
        raise SystemExit(
            "rlunlearn train-attributor: --model_name_or_path is required: the causal LM the classifier starts from "
            "(e.g. the fine-tuned target model, runs/finetune-.../target)."
        )
    config.output_dir = str(_run_folder(config.output_dir, "attributor"))
    _, metrics = train_attributor(data_args.bundle(), data_args, model_args, config)
    print(
        f"Held-out accuracy {metrics['accuracy']:.3f} over {len(metrics['labels'])} labels "
        f"({metrics['eval_examples']} texts); temperature {metrics['temperature']:.2f}."
    )
    for label, accuracy in metrics["accuracy_per_label"].items():
        print(f"  {label:<40} {accuracy:.3f}")
    print(f"Classifier saved in {config.output_dir}; use it with `rlunlearn unlearn --method dareu --attributor DIR`.")
    return 0


# ---- bench ----------------------------------------------------------------------------------------------------------


def bench(argv: list[str]) -> int:
    """Benchmarks that print their figures: every method on a preset (`bench [unlearn]`), `bench eval` (evaluation
    speed), `bench memory` (fp32, bf16 and 4-bit+LoRA unlearning memory)."""
    task = argv[0] if argv and not argv[0].startswith("-") else "unlearn"
    if task not in TASKS:
        raise SystemExit(
            f"usage: rlunlearn bench [{'|'.join(TASKS)}] [options] (default: unlearn); `rlunlearn bench {task} --help` "
            "lists the options."
        )
    argv = argv[1:] if argv and argv[0] == task else argv
    parser = _parser((TASKS[task][1], CacheArguments), f"rlunlearn bench {task}")
    args, cache_args = parser.parse_args_and_config(argv)
    TASKS[task][0](args, cache_args, _run_folder(args.output_dir, f"bench-{task}"))
    return 0


COMMANDS = {
    "demo": demo,
    "pretrain": pretrain_command,
    "finetune": finetune_command,
    "unlearn": unlearn_command,
    "train-attributor": train_attributor_command,
    "eval": eval_command,
    "bench": bench,
}


def _usage() -> str:
    lines = ["usage: rlunlearn <command> [options] [--config options.yaml]", "", "commands:"]
    for name, function in COMMANDS.items():
        lines.append(f"  {name:<17} {function.__doc__.strip().splitlines()[0]}")
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
