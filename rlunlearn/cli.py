"""The `rlunlearn` command line.

    rlunlearn [--debug] <command> [options] [--config options.yaml]

Every command takes its options as flags or from a YAML file (TRL's `TrlParser`: flags override the file), checks them
and its input files before any model loads, and writes a run folder (`--output_dir`, default runs/<command>-<time>)
holding its config, logs and results as JSON. An error in the options or input files prints as one line with exit code
2; `--debug` prints its traceback instead.

This module imports nothing heavy: a command imports torch, transformers and the trainers when it runs, so that
`rlunlearn --help` and errors in the options of most commands come at once.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import json
import logging
import os
import shutil
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

from rlunlearn.trainers import METHODS

from .arguments import (
    EVAL_DTYPES,
    AnswerEvalArguments,
    CacheArguments,
    DataArguments,
    ProbeSettings,
    ScratchModelArguments,
    check_output_dir,
    check_probes_apply,
    check_training_settings,
    resolve_probes,
)
from .presets import DEMO, DEMO_SEED

logger = logging.getLogger("rlunlearn")

CONFIG_EPILOG = """\
Options can also come from a YAML file, --config options.yaml (one `option: value` a line); flags given
beside it override the file. `rlunlearn --debug <command> ...` prints the traceback of an error."""


def _parse(command: str, groups: dict[str, type], argv: list[str], description: str, usage: str = "") -> tuple:
    """The options of `command`: one dataclass a group (help title -> dataclass)."""
    from .parser import OptionParser

    usage = usage or f"rlunlearn {command} [options] [--config FILE]"
    return OptionParser(groups, f"rlunlearn {command}", usage, description, CONFIG_EPILOG).parse(argv)


def _default_output_dir(output_dir: str | None, command: str) -> str:
    if output_dir in (None, "", "trainer_output"):
        return os.path.join("runs", f"{command}-{time.strftime('%Y%m%d-%H%M%S')}")
    return output_dir


@contextlib.contextmanager
def _run_folder(output_dir: str):
    """The run folder, made now, and the console while the command works in it (see `console.quiet_console`). A
    command that fails before it saved any weights leaves no folder behind."""
    from .console import quiet_console

    folder = Path(output_dir)
    made = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with quiet_console():
            yield folder
    except BaseException:
        if made and not any(folder.rglob("*.safetensors")):
            shutil.rmtree(folder, ignore_errors=True)
        raise


def _to_json(obj) -> dict:
    return obj.to_dict() if hasattr(obj, "to_dict") else dataclasses.asdict(obj)


def _write_json(path: Path, content) -> None:
    path.write_text(json.dumps(content, indent=2, default=str))


def _write_report(run: Path, report: dict, title: str) -> None:
    from .evaluation import PROBE_COLUMNS, has_probes, plot_tradeoff, report_task, summary_table, utility_notes

    _write_json(run / "report.json", report)
    print(f"\n{title}\n{summary_table(report)}")
    if report_task(report) != "entities":
        print(f"\nReport: {run / 'report.json'}")
        return
    plot_tradeoff(report, run / "tradeoff.png", title)
    if has_probes(report):
        print(f"\nRobustness probes (forget split)\n{summary_table(report, PROBE_COLUMNS)}")
    for note in utility_notes(report):
        print(note)
    print(f"\nReport: {run / 'report.json'}; plot: {run / 'tradeoff.png'}")


# ---- demo -----------------------------------------------------------------------------------------------------------


@dataclass
class DemoArguments:
    output_dir: str | None = field(default=None, metadata={"help": "Run folder (default runs/demo-<time>)."})
    method: str | None = field(
        default=None,
        metadata={"help": "Unlearning method, with the demo's settings (default: the demo's own method)."},
    )
    seed: int = field(default=DEMO_SEED, metadata={"help": "Seed of fine-tuning and unlearning."})


# The splits whose answers the demo shows before and after, by task (multiple choice generates none).
SIDE_BY_SIDE = {
    "entities": (("Forget set", "forget"), ("Retain set", "retain")),
    "harmful": (("Harmful prompts", "harmful"), ("Normal questions", "normal")),
    "muse": (("Forget text, continued", "verbmem_forget"), ("Retain text's questions", "knowmem_retain")),
}


def _side_by_side(bundle, results: dict, method: str, split: str, count: int = 3) -> str:
    """The first `count` questions of a split with the true answer and the target's and `method`'s answers."""
    data = bundle.eval_splits[split]
    lines = []
    for i in range(min(count, len(data))):
        lines += [
            f"  Q: {data[i]['question']}",
            f"     true answer: {data[i]['answer']}",
            f"     target:      {results['target']['splits'][split]['generations'][i]}",
            f"     {method + ':':<12} {results[method]['splits'][split]['generations'][i]}",
        ]
    return "\n".join(lines)


def demo_unlearning_config(method: str, output_dir: Path, seed: int):
    """The config `rlunlearn demo --method` unlearns with: the demo's settings of `method`, which win over the demo's
    own (DareU's preset sets `logging_steps` too)."""
    return METHODS[method][0](
        **{
            "output_dir": str(output_dir),
            "seed": seed,
            "report_to": "none",
            "save_strategy": "no",
            "logging_steps": 5,
            **DEMO["unlearning_common"],
            **DEMO["unlearning"].get(method, {}),
        }
    )


def demo(argv: list[str]) -> int:
    """Forget two fictitious authors: pretrain a small base, fine-tune target and retain models (all cached),
    unlearn, and show the answers before and after beside the TOFU metrics.

    The demo generates fictitious authors (20 by default, 2 of them to forget), pretrains a small Llama and its BPE
    tokenizer on text that shares no author with them (the offline base), fine-tunes from it a target model on every
    author and a retain model on the authors to keep (the model that never saw the forgotten ones), unlearns the
    forgotten authors from the target with --method, and prints the answers of the target and of the unlearned model
    beside the TOFU and MUSE metrics of all three. Nothing is downloaded. The base and the fine-tuned models are
    cached (--cache_dir): the first run takes minutes on a CPU, the next ones much less."""
    demo_args, data_args, scratch_args, cache_args = _parse(
        "demo",
        {
            "demo": DemoArguments,
            "data": DataArguments,
            "base model (built here)": ScratchModelArguments,
            "cache": CacheArguments,
        },
        argv,
        inspect.getdoc(demo),
    )
    if demo_args.method is not None and demo_args.method not in METHODS:
        raise ValueError(f"--method {demo_args.method!r} is not a method; the methods are: {', '.join(METHODS)}.")
    check_output_dir(demo_args.output_dir)
    bundle = data_args.bundle()

    from trl import ModelConfig

    from .evaluation import RETAIN, TARGET, UNLEARNED, EvalSettings, build_report, evaluate_folder, evaluate_model
    from .finetune import FinetuneConfig
    from .pipeline import offline_base, prepare_models, report_info, unlearn
    from .presets import STANDIN_FINETUNE
    from .pretrain import PretrainConfig

    method = demo_args.method or DEMO["method"]
    with _run_folder(_default_output_dir(demo_args.output_dir, "demo")) as run:
        started = time.time()
        fmt = data_args.prompt_format()
        settings = EvalSettings()
        print(
            f"Data: {bundle.name}: forget {len(bundle.forget)} answers of {', '.join(bundle.forget_authors)}; "
            f"retain {len(bundle.retain)} answers of {len(bundle.retain_authors)} authors."
        )
        pretrain_config = PretrainConfig(output_dir="unused", report_to="none", seed=demo_args.seed, **DEMO["pretrain"])
        base = offline_base(data_args, scratch_args, cache_args.cache_dir, pretrain_config)
        print(f"Base model: {base or 'none (from scratch)'} ({time.time() - started:.0f}s)")
        # A stand-in task's target learns its data with the recipe measured for them (as `bench --task` does).
        recipe = STANDIN_FINETUNE if data_args.standin else DEMO["finetune"]
        finetune_config = FinetuneConfig(
            output_dir=str(run / "finetune"), seed=demo_args.seed, report_to="none", **(recipe if base else {})
        )
        finetune_started = time.time()
        prepared = prepare_models(
            bundle, data_args, ModelConfig(model_name_or_path=base), scratch_args, finetune_config, cache_args.cache_dir
        )
        print(
            f"Target and retain models: {prepared.target.parent} ("
            f"{'reused from the cache' if prepared.reused else 'fine-tuned'}, {time.time() - finetune_started:.0f}s)"
        )

        unlearn_config = demo_unlearning_config(method, run / "unlearned", demo_args.seed)
        unlearn_started = time.time()
        trainer = unlearn(method, unlearn_config, prepared.target, bundle, data_args, ModelConfig())
        print(f"Unlearned with {method} in {time.time() - unlearn_started:.0f}s.")

        results = {
            RETAIN: evaluate_folder(
                prepared.retain, bundle, fmt, settings, cache=True, description="evaluating retain"
            ),
            TARGET: evaluate_folder(
                prepared.target, bundle, fmt, settings, cache=True, description="evaluating target"
            ),
            method: evaluate_model(
                trainer.model,
                trainer.processing_class,
                bundle,
                fmt,
                settings=settings,
                description=f"evaluating {method}",
            ),
        }
        roles = {TARGET: TARGET, RETAIN: RETAIN, method: UNLEARNED}
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
                "demo": {**_to_json(demo_args), "method": method},
                "data": _to_json(data_args),
                "scratch_model": _to_json(scratch_args),
                "base_model": base,
                "unlearning": unlearn_config.to_dict(),
                "target_model": str(prepared.target),
                "retain_model": str(prepared.retain),
            },
        )
        _write_json(run / "log_history.json", trainer.state.log_history)
        for title, split in SIDE_BY_SIDE.get(bundle.task, ()):
            print(f"\n{title}: answers before (target) and after ({method})")
            print(_side_by_side(bundle, results, method, split))
        _write_report(run, report, f"{bundle.name}: target, retain and {method}-unlearned models")
        print(f"Done in {time.time() - started:.0f}s. Run folder: {run}")
    return 0


# ---- pretrain -------------------------------------------------------------------------------------------------------


def pretrain_command(argv: list[str]) -> int:
    """Pretrain the offline base model on text that shares no author with the data's benchmark (cached, resumable).

    Without --output_dir, the base is cached by its settings (--cache_dir) and reused by `demo`, `finetune` and
    `bench`; with one, it is written there and resumes from the checkpoints an interrupted run left."""
    from .pretrain import PretrainConfig

    data_args, scratch_args, config, cache_args = _parse(
        "pretrain",
        {
            "data": DataArguments,
            "base model (built here)": ScratchModelArguments,
            "pretraining (PretrainConfig)": PretrainConfig,
            "cache": CacheArguments,
        },
        argv,
        inspect.getdoc(pretrain_command),
    )
    check_training_settings(config)

    from .console import quiet_console
    from .pretrain import cached_base, pretrain, pretraining_corpus

    corpus = pretraining_corpus(data_args)
    print(f"Pretraining corpus: {len(corpus)} question-answer texts ({data_args.data}).")
    started = time.time()
    # No run folder: the base goes to the cache, or to --output_dir, where an interrupted run's checkpoints stay.
    with quiet_console():
        if config.output_dir in (None, "", "trainer_output"):
            folder, reused = cached_base(
                corpus,
                config,
                cache_args.cache_dir,
                scratch_args.model_preset,
                scratch_args.architecture,
                scratch_args.vocab_size,
                data_args.pretraining_format(),
            )
        else:  # a folder of the user's: resumes from its checkpoints, not cached
            folder, reused = (
                pretrain(
                    corpus,
                    config,
                    scratch_args.model_preset,
                    scratch_args.architecture,
                    scratch_args.vocab_size,
                    data_args.pretraining_format(),
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
class FinetuneArguments(AnswerEvalArguments):
    which: str = field(
        default="both", metadata={"help": "Which model to fine-tune.", "choices": ["target", "retain", "both"]}
    )


def finetune_command(argv: list[str]) -> int:
    """Fine-tune the target model (all authors) and the retain model (retain authors only) into the run folder, from
    --model_name_or_path or the offline pretrained base.

    Without --model_name_or_path, both start from the offline base (`rlunlearn pretrain`, cached), or with
    --from_scratch from a random initialisation and learn the data's general knowledge as well; with a checkpoint,
    both start from it (TOFU's recipe: --learning_rate 1e-5 --num_train_epochs 5)."""
    from trl import ModelConfig

    from .finetune import FinetuneConfig

    args, data_args, scratch_args, model_args, config, cache_args = _parse(
        "finetune",
        {
            "finetune": FinetuneArguments,
            "data": DataArguments,
            "base model (without --model_name_or_path)": ScratchModelArguments,
            "model (TRL's ModelConfig)": ModelConfig,
            "fine-tuning (FinetuneConfig)": FinetuneConfig,
            "cache": CacheArguments,
        },
        argv,
        inspect.getdoc(finetune_command),
    )
    check_training_settings(config)
    if model_args.model_name_or_path:
        from .models import check_lora_targets, check_model_source

        check_model_source(model_args.model_name_or_path)
        check_lora_targets(model_args)
    bundle = data_args.bundle()

    from .evaluation import RETAIN, EvalSettings, build_report, evaluate_folder
    from .pipeline import finetune_models, offline_base, report_info

    with _run_folder(_default_output_dir(config.output_dir, "finetune")) as run:
        config.output_dir = str(run)
        if not model_args.model_name_or_path:
            model_args.model_name_or_path = offline_base(data_args, scratch_args, cache_args.cache_dir)
        settings = EvalSettings(args.max_new_tokens, args.eval_batch_size)
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
        results = {
            name: evaluate_folder(
                run / name, bundle, data_args.prompt_format(), settings, description=f"evaluating {name}"
            )
            for name in which
        }
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
    method: str = field(default="ga", metadata={"help": "Unlearning method (the list above)."})


def _method_of(argv: list[str]) -> str:
    """The --method given on the command line or in the --config file: it decides which config class parses the rest."""
    from .parser import read_config

    method = None
    for i, arg in enumerate(argv):
        if arg == "--method" and i + 1 < len(argv):
            method = argv[i + 1]
        elif arg.startswith("--method="):
            method = arg.split("=", 1)[1]
        elif arg == "--config" and i + 1 < len(argv) and method is None:
            method = read_config(argv[i + 1]).get("method")
    method = method or UnlearnArguments.method
    if method not in METHODS:
        raise ValueError(f"--method {method!r} is not a method; the methods are: {', '.join(METHODS)}.")
    return method


def unlearn_command(argv: list[str]) -> int:
    """Unlearn the forget set from a fine-tuned target model (--model_name_or_path) with one method.

    The model is saved in the run folder with a model card (README.md) and, unless --evaluate false, its evaluation
    (report.json)."""
    method = _method_of(argv)

    from trl import ModelConfig

    from .launch import ScriptArguments, check_script
    from .pipeline import check_unlearning, extra_inputs_of

    config_class = METHODS[method][0]
    # The options a method reads beyond its config: DareU's rewards, Reveal-and-Release's target.
    extra = extra_inputs_of(method)
    # ModelConfig before the config: the help lists its options (all TRL's) before the config's inherited ones.
    groups = {
        "unlearn": UnlearnArguments,
        "model (TRL's ModelConfig)": ModelConfig,
        f"{method} ({config_class.__name__})": config_class,
        **({f"{method}'s inputs ({extra.arguments.__name__})": extra.arguments} if extra else {}),
        "after unlearning": ScriptArguments,
        "data": DataArguments,
    }
    choice = (
        f"The methods: {', '.join(METHODS)}. The options below are those of --method {method}; `rlunlearn unlearn "
        "--method NAME --help` lists another method's."
    )
    description = f"{inspect.getdoc(unlearn_command)}\n\n{textwrap.fill(choice, 115)}"
    usage = "rlunlearn unlearn --method NAME [options] [--config FILE]"
    _, model_args, config, *method_args, script_args, data_args = _parse("unlearn", groups, argv, description, usage)
    method_args = method_args[0] if method_args else None
    # Checked here, before the run folder is made; run_unlearning checks again for its other callers (no model loads).
    check_script(script_args, model_args)
    bundle = data_args.bundle()
    check_unlearning(method, config, model_args.model_name_or_path, bundle, data_args, model_args, method_args)

    from .launch import run_unlearning

    with _run_folder(_default_output_dir(config.output_dir, "unlearn")) as run:
        config.output_dir = str(run)
        _write_json(
            run / "run_config.json",
            {
                "method": method,
                "script": _to_json(script_args),
                "data": _to_json(data_args),
                "model": _to_json(model_args),
                "unlearning": config.to_dict(),
                **({type(method_args).__name__: _to_json(method_args)} if method_args else {}),
            },
        )
        trainer, report = run_unlearning(method, script_args, data_args, model_args, config, method_args)
        if getattr(trainer, "rounds", None):
            print(f"Reveal reward per round (bandit history in {run / 'reveal_release.json'}):")
            for record in trainer.rounds:
                print(
                    f"  round {record['round']}: {record['reveal_reward']:.3f}, {record['revealed']} answers revealed"
                )
        if report is not None:
            _write_report(run, report, f"{report['bundle']['name']}: {method}")
        print(f"Unlearned model and its card (README.md) saved in {run}.")
    return 0


# ---- eval -----------------------------------------------------------------------------------------------------------


@dataclass
class EvalArguments(AnswerEvalArguments):
    models: list[str] = field(default_factory=list, metadata={"help": "Folders of (unlearned) models to evaluate."})
    names: list[str] = field(
        default_factory=list, metadata={"help": "Names of --models in the report (default: folder names)."}
    )
    target_model: str | None = field(
        default=None,
        metadata={
            "help": "The model before unlearning: marked in the plot, and the judge of every model's forget answers' "
            "perplexity (fluency)."
        },
    )
    retain_model: str | None = field(
        default=None, metadata={"help": "The retain model: forget quality, privleak and Tug-of-War compare with it."}
    )
    retain_report: str | None = field(
        default=None, metadata={"help": "Instead of --retain_model: a report.json of `rlunlearn eval` holding it."}
    )
    dtype: str = field(
        default="float32",
        metadata={"help": "dtype the models are loaded in.", "choices": list(EVAL_DTYPES)},
    )
    probes: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Robustness probes run on every model: paraphrase, quantization, relearning, extraction, or all "
            "(options: the --relearning_* and --extraction_* flags)."
        },
    )
    fluency_classifier: str | None = field(
        default=None,
        metadata={
            "help": "A sequence-classification model (folder or hub id) that judges the forget answers' fluency, e.g. "
            "madhurjindal/autonlp-Gibberish-Detector-492513457 (open-unlearning's)."
        },
    )
    fluency_label: str = field(
        default="0", metadata={"help": "The classifier's fluent label: its name or index (the gibberish detector's 0)."}
    )
    output_dir: str | None = field(default=None, metadata={"help": "Run folder (default runs/eval-<time>)."})


def eval_command(argv: list[str]) -> int:
    """Evaluate models on a dataset's splits: TOFU and MUSE metrics, membership inference, a report and a plot; on the
    harmful, wmdp and muse tasks, theirs (harmful rate, output similarity; multiple-choice accuracy; VerbMem, KnowMem,
    PrivLeak)."""
    args, data_args, probe_settings = _parse(
        "eval",
        {"eval": EvalArguments, "data": DataArguments, "robustness probes": ProbeSettings},
        argv,
        inspect.getdoc(eval_command),
    )
    probes = resolve_probes(args.probes)
    if args.retain_model and args.retain_report:
        raise ValueError("give --retain_model or --retain_report, not both.")
    if args.names and len(args.names) != len(args.models):
        raise ValueError(f"{len(args.names)} --names for {len(args.models)} --models; give one name a model.")
    models = dict(zip(args.names or [Path(m).name for m in args.models], args.models))
    roles = dict.fromkeys(models, "unlearned")
    options = dict.fromkeys(models, "--models")
    if args.target_model:
        models["target"], roles["target"], options["target"] = args.target_model, "target", "--target_model"
    if args.retain_model:
        models["retain"], roles["retain"], options["retain"] = args.retain_model, "retain", "--retain_model"
    if not models:
        raise ValueError("nothing to evaluate; give --models, --target_model or --retain_model.")
    check_output_dir(args.output_dir)
    bundle = data_args.bundle()

    from .evaluation import EvalSettings, build_report, evaluate_folder, retain_from_report
    from .models import check_model_source, check_same_tokenizer
    from .pipeline import report_info

    for name, path in models.items():
        check_model_source(path, options[name])
    if args.fluency_classifier:
        check_model_source(args.fluency_classifier, "--fluency_classifier")
    if args.retain_model:
        for name, path in models.items():
            if name != "retain":
                check_same_tokenizer(path, args.retain_model, "--retain_model")
    retain = retain_from_report(args.retain_report) if args.retain_report else None
    check_probes_apply(bundle.task, probes)
    if args.fluency_classifier and bundle.task == "wmdp":
        raise ValueError("--fluency_classifier judges generated answers; the wmdp task generates none: drop it.")
    judge = data_args.harm_judge_function()
    with _run_folder(_default_output_dir(args.output_dir, "eval")) as run:
        fmt = data_args.prompt_format()
        settings = EvalSettings(args.max_new_tokens, args.eval_batch_size)
        _write_json(
            run / "run_config.json",
            {"eval": _to_json(args), "data": _to_json(data_args), "probes": _to_json(probe_settings)},
        )
        results = {}
        for name, path in models.items():
            started = time.time()
            results[name] = evaluate_folder(
                path,
                bundle,
                fmt,
                settings,
                args.dtype,
                probes=probes,
                probe_settings=probe_settings,
                description=f"evaluating {name}",
                harm_judge=judge,
            )
            print(f"Evaluated {name} in {time.time() - started:.0f}s")
        _judge_fluency(results, args, fmt)
        retain = results.get("retain", retain)
        info = report_info(bundle, data_args, settings)
        if probes:
            info["probes"] = {"probes": list(probes), **dataclasses.asdict(probe_settings)}
        report = build_report(results, roles, retain, info)
        _write_report(run, report, bundle.name)
    return 0


def _judge_fluency(results: dict[str, dict], args: EvalArguments, fmt) -> None:
    """Every model's forget answers (on the harmful task: its answers to the harmful prompts) judged by the
    --fluency_classifier (`forget_fluency`) and by their perplexity under the --target_model
    (`forget_generation_perplexity`), where those are given."""
    from .evaluation import FLUENCY_SPLITS, classifier_judge, judge_fluency, saved_model_perplexity_judge

    judges = {}
    if args.fluency_classifier:
        label = int(args.fluency_label) if args.fluency_label.isdigit() else args.fluency_label
        judges["fluency"] = classifier_judge(args.fluency_classifier, label)
    if args.target_model:
        judges["generation_perplexity"] = saved_model_perplexity_judge(args.target_model, fmt, args.dtype)
    for name, judge in judges.items():
        for result in results.values():
            for split in FLUENCY_SPLITS.values():
                if split in result["splits"]:
                    judge_fluency(result, judge, name, split)


# ---- train-attributor -----------------------------------------------------------------------------------------------


def train_attributor_command(argv: list[str]) -> int:
    """Train DareU's attribution classifier (whose data is this text?) from a causal LM; prints held-out accuracy."""
    from trl import ModelConfig

    from .attribution import AttributorConfig

    data_args, model_args, config = _parse(
        "train-attributor",
        {
            "data": DataArguments,
            "model (TRL's ModelConfig)": ModelConfig,
            "training (AttributorConfig)": AttributorConfig,
        },
        argv,
        inspect.getdoc(train_attributor_command),
    )
    if not model_args.model_name_or_path:
        raise ValueError(
            "--model_name_or_path is required: the causal LM the classifier starts from (e.g. the fine-tuned target "
            "model, runs/finetune-.../target)."
        )
    check_training_settings(config)
    from .models import check_model_source

    check_model_source(model_args.model_name_or_path)
    bundle = data_args.bundle()

    from .attribution import train_attributor

    with _run_folder(_default_output_dir(config.output_dir, "attributor")) as run:
        config.output_dir = str(run)
        _, metrics = train_attributor(bundle, data_args, model_args, config)
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
    """Benchmark the methods, the evaluation's speed, unlearning's memory or its speed, and print the figures.

    `rlunlearn bench [unlearn]` runs every method on a preset's draws of forget authors (forget quality, model
    utility, costs, probes); `bench tune` chooses each method's learning rate on the validation draws; `bench eval`
    times the whole evaluation suite; `bench memory` compares the memory of unlearning steps in fp32, bf16 and 4-bit +
    LoRA; `bench speed` times each method's steps against a plain Trainer with the same loss; `bench gpu-check` runs
    every method a few steps in bf16 and in 4-bit + LoRA (for a GPU). `rlunlearn bench <task> --help` lists a task's
    options."""
    from .arguments import BENCH_TASK_ARGUMENTS

    task = argv[0] if argv and not argv[0].startswith("-") else "unlearn"
    if task not in BENCH_TASK_ARGUMENTS:
        raise ValueError(f"unknown task {task!r}; the tasks are: {', '.join(BENCH_TASK_ARGUMENTS)} (default: unlearn).")
    argv = argv[1:] if argv and argv[0] == task else argv
    tasks = inspect.getdoc(bench).split("\n\n", 1)[1]
    args, cache_args = _parse(
        f"bench {task}",
        {f"bench {task}": BENCH_TASK_ARGUMENTS[task], "cache": CacheArguments},
        argv,
        f"{inspect.getdoc(BENCH_TASK_ARGUMENTS[task])}\n\n{tasks}",
    )
    check_output_dir(args.output_dir)
    with _run_folder(_default_output_dir(args.output_dir, f"bench-{task}")) as run:
        from .bench import TASKS

        TASKS[task](args, cache_args, run)
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


def _usage_parser() -> argparse.ArgumentParser:
    """The top-level help: the commands and what each does (the first paragraph of its docstring)."""
    parser = argparse.ArgumentParser(
        prog="rlunlearn",
        usage="rlunlearn [--debug] <command> [options] [--config FILE]",
        description="Make a language model forget chosen data: fine-tune, unlearn, evaluate, benchmark.",
        epilog="`rlunlearn <command> --help` lists a command's options.",
    )
    parser.add_argument("--debug", action="store_true", help="On an error, print its traceback, not one line.")
    commands = parser.add_subparsers(title="commands", metavar="<command>")
    for name, function in COMMANDS.items():
        commands.add_parser(name, help=" ".join(inspect.getdoc(function).split("\n\n")[0].split()), add_help=False)
    return parser


@contextlib.contextmanager
def _console_logging():
    """rlunlearn's progress messages on the console while a command runs. Only rlunlearn's logger gets a handler: a
    handler on the root logger would print again every library message that has its own (huggingface_hub's retries
    were printed twice). Nor do its messages go on to the root logger, to which a library may give a handler of its own
    (rouge-score, through absl, calls logging.basicConfig), printing each a second time."""
    if logger.handlers:  # the caller has set rlunlearn's logging up itself
        yield
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = bool(argv) and argv[0] == "--debug"
    argv = argv[1:] if debug else argv
    if not argv or argv[0] in ("-h", "--help"):
        _usage_parser().print_help()
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(
            f"rlunlearn: unknown command {command!r}; the commands are: {', '.join(COMMANDS)} (`rlunlearn --help` "
            "says what each does).",
            file=sys.stderr,
        )
        return 2
    with _console_logging():
        try:
            return COMMANDS[command](rest)
        except (ValueError, OSError) as error:
            # Bad options and unusable input files: the project's checks raise these, naming the option.
            if debug:
                raise
            print(f"rlunlearn {command}: {' '.join(str(error).split())}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    raise SystemExit(main())
