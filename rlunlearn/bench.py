"""Benchmarks that print their figures: the evaluation suite's speed, and every method on a named preset.

Speed, memory and quality targets are checked here (and by the scripts under examples/), never by timed assertions in
tests.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
import torch
from filelock import FileLock
from trl import ModelConfig

from rlunlearn.trainers import METHODS, UnlearningConfig
from rlunlearn.trainers.utils import bf16_default, check_vllm

from .arguments import (
    BenchArguments,
    CacheArguments,
    DataArguments,
    GpuCheckArguments,
    MemoryBenchArguments,
    ScratchModelArguments,
    TuneArguments,
    check_probes_apply,
)
from .attribution import AttributorConfig, attributor_settings, cached_attributor, default_attributor_config
from .cache import entry_threads, write_whole
from .console import quiet_console
from .data.bundle import UnlearningBundle
from .data.draws import FORGET_SHAPES, VALIDATION, author_draws
from .evaluation import (
    FLUENCY_SPLITS,
    PROBE_COLUMNS,
    RETAIN,
    TARGET,
    UNLEARNED,
    EvalSettings,
    ProbeSettings,
    build_report,
    evaluate_folder,
    evaluate_model,
    format_table,
    format_value,
    judge_fluency,
    markdown_table,
    resolve_probes,
    saved_model_perplexity_judge,
)
from .evaluation.aggregate import mean_interval, rank_agreement
from .finetune import FinetuneConfig
from .models import MODEL_PRESETS, load_model, load_tokenizer
from .pipeline import PreparedModels, extra_inputs_of, prepare_models, report_info, unlearn
from .presets import (
    COLLAPSE_RATIO,
    CONTROLS,
    DEMO,
    DEMO_SEED,
    MEMORY_MODES,
    PRESETS,
    STANDIN_FINETUNE,
    STANDIN_SEEDS,
    STANDIN_TASKS,
    TUNING_RULE,
    preset_method,
    preset_row,
)
from .pretrain import PretrainConfig, cached_base, pretraining_corpus
from .speed import bench_speed


def preset_unlearning_config(preset: str, row: str, **overrides):
    """The config of the preset's row (a method, a variant of one, or a control) with its hyperparameters (and
    `overrides`)."""
    settings = {k: v for k, v in PRESETS[preset]["unlearning"][preset_row(row)[0]].items() if k != "method"}
    values = {**PRESETS[preset]["unlearning_common"], **settings, **overrides}
    return METHODS[preset_method(preset, row)][0](**values)


class PeakMemory:
    """Peak memory while the block runs: allocated GPU memory under CUDA, else the process's resident set size
    (sampled every 20 ms, so a spike shorter than that can be missed)."""

    def __enter__(self):
        self.cuda = torch.cuda.is_available()
        self.peak_bytes = 0
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            return self
        process, self._stop = psutil.Process(os.getpid()), threading.Event()

        def sample():
            while not self._stop.is_set():
                self.peak_bytes = max(self.peak_bytes, process.memory_info().rss)
                self._stop.wait(0.02)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            self.peak_bytes = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()
        return False

    @property
    def megabytes(self) -> float:
        return round(self.peak_bytes / 2**20, 1)


def _check(args) -> list[str]:
    """Every check of a bench task's arguments that needs no model, before anything loads; returns the methods to
    run."""
    preset = PRESETS[args.preset]
    args.target_model, args.retain_model = getattr(args, "target_model", None), getattr(args, "retain_model", None)
    if bool(args.target_model) != bool(args.retain_model):
        raise ValueError("give both --target_model and --retain_model, or neither.")
    if args.base_model and args.target_model:
        raise ValueError("give --base_model or --target_model and --retain_model, not both.")
    if "authors" not in preset and not (args.base_model or args.target_model):
        raise ValueError(
            f"the {args.preset} preset starts from a pretrained model: give --base_model (a "
            "checkpoint fine-tuned here into the target and retain models), or --target_model and --retain_model."
        )
    if getattr(args, "draws", 1) < 1:
        raise ValueError(f"--draws {args.draws}: run at least one draw.")
    task = getattr(args, "task", "tofu")
    if task != "tofu":
        if args.preset != "cpu" or args.base_model or args.target_model:
            raise ValueError(
                f"--task {task} benchmarks the offline stand-in on the cpu preset's own base: drop --preset "
                f"{args.preset}/--base_model/--target_model (published data run with `rlunlearn unlearn --data {task}`)."
            )
        if args.forget_authors:
            raise ValueError(f"--forget_authors are TOFU's: drop them with --task {task}.")
        pool = STANDIN_SEEDS[args.draws_from]
        if args.draws > len(pool):
            raise ValueError(f"--draws {args.draws}: the {args.draws_from} pool of --task {task} holds {len(pool)}.")
    if "authors" in preset and args.forget_authors:
        pool = preset["authors"].pool(args.draws_from)
        outside = sorted(set(args.forget_authors) - set(pool))
        if outside:
            raise ValueError(
                f"--forget_authors {outside} are not in the {args.draws_from} pool "
                f"({pool[0]}-{pool[-1]}); choose authors from it or change --draws_from."
            )
    methods = getattr(args, "methods", None) or list(preset["unlearning"])
    controls = [name for name, control in CONTROLS.items() if control["row"] in preset["unlearning"]]
    unknown = [m for m in methods if m not in preset["unlearning"] and m not in controls]
    if unknown:
        raise ValueError(
            f"unknown method(s) {unknown}; the {args.preset} preset runs: {', '.join(preset['unlearning'])}, and "
            f"the controls {', '.join(controls)}."
        )
    return methods


def draw_data(args: BenchArguments) -> list[DataArguments]:
    """The data of each draw: the preset's data with the draw's forget authors (the cpu preset), or as it is (gpu); a
    stand-in task's generated world of each seed of the pool."""
    task = getattr(args, "task", "tofu")
    if task != "tofu":
        seeds = STANDIN_SEEDS[args.draws_from][: args.draws]
        return [DataArguments(**STANDIN_TASKS[task], generator_seed=seed) for seed in seeds]
    preset = PRESETS[args.preset]
    data = DataArguments(tofu_path=args.tofu_path, **preset["data"])
    if "authors" not in preset:
        return [data]
    if args.forget_authors:
        draws = [sorted(args.forget_authors)]
    else:
        count = 1 if args.target_model else getattr(args, "draws", 1)
        pool = preset["authors"].pool(args.draws_from)
        draws = author_draws(pool, FORGET_SHAPES[getattr(args, "forget_shape", "forget01")], count)
    return [dataclasses.replace(data, forget_authors=draw) for draw in draws]


def _base_model(args: BenchArguments, cache_args: CacheArguments) -> str:
    """The checkpoint target and retain models are fine-tuned from: --base_model, or the preset's offline base
    (pretrained now, or reused from the cache)."""
    if args.base_model:
        return args.base_model
    preset = PRESETS[args.preset]
    task = getattr(args, "task", "tofu")
    if task != "tofu":
        # The demo's base: the generated authors' world (seed 0), which holds none of the stand-ins' alchemy.
        corpus = pretraining_corpus(DataArguments(**STANDIN_TASKS[task]))
        config = PretrainConfig(output_dir="unused", report_to="none", seed=DEMO_SEED, **DEMO["pretrain"])
    else:
        corpus = pretraining_corpus(DataArguments(tofu_path=args.tofu_path, **preset["data"]))
        config = PretrainConfig(output_dir="unused", report_to="none", **preset["base"]["pretrain"])
    started = time.time()
    folder, reused = cached_base(corpus, config, cache_args.cache_dir, preset["base"]["model_preset"])
    print(f"Base model: {folder} ({'reused' if reused else f'pretrained in {time.time() - started:.0f}s'})", flush=True)
    return str(folder)


def _prepared(args: BenchArguments, cache_args: CacheArguments, data_args: DataArguments, bundle, base: str | None):
    """The target and retain models of one draw: the ones given, or fine-tuned from `base` (or reused)."""
    if args.target_model:
        # Models given by path may change between runs: what is trained from them (DareU's attribution classifier) is
        # kept in the run folder, not cached.
        folder = Path(args.output_dir)
        return PreparedModels(folder, Path(args.target_model), Path(args.retain_model), reused=True)
    recipe = PRESETS[args.preset]["finetune"] if getattr(args, "task", "tofu") == "tofu" else STANDIN_FINETUNE
    finetune = FinetuneConfig(output_dir="unused", report_to="none", **recipe)
    return prepare_models(
        bundle, data_args, ModelConfig(model_name_or_path=base), ScratchModelArguments(), finetune, cache_args.cache_dir
    )


def bench_eval(args: BenchArguments, cache_args: CacheArguments, run: Path) -> dict:
    """`rlunlearn bench eval`, which `EvalBenchArguments` describes; returns the timings it prints."""
    _check(args)
    args.output_dir = str(run)
    data_args = draw_data(args)[0]
    bundle = data_args.bundle()
    base = None if args.target_model else _base_model(args, cache_args)
    prepared = _prepared(args, cache_args, data_args, bundle, base)
    settings = EvalSettings()
    started = time.time()
    result = evaluate_folder(
        prepared.target, bundle, data_args.prompt_format(), settings, dtype=args.dtype, progress=False
    )
    seconds = time.time() - started
    examples = sum(len(split) for split in bundle.eval_splits.values())
    timing = {
        "dtype": args.dtype,
        "examples": examples,
        "seconds": round(seconds, 1),
        "seconds_per_100_examples": round(100 * seconds / examples, 2),
        "splits": {name: len(split) for name, split in bundle.eval_splits.items()},
    }
    print(
        f"The whole evaluation suite on the {args.preset} preset's target model ({args.dtype}): {examples} examples "
        f"({', '.join(f'{k} {v}' for k, v in timing['splits'].items())}) in {seconds:.1f}s: "
        f"{timing['seconds_per_100_examples']:.2f}s per 100 examples."
    )
    report = build_report({TARGET: result}, {TARGET: TARGET}, None, {"timing": timing})
    (run / "bench_eval.json").write_text(json.dumps({"timing": timing, "report": report}, indent=2, default=str))
    return timing


def _reads_attributor(method: str, extra_options: dict | None = None) -> bool:
    """Whether the method's extra inputs (at their defaults, or `extra_options`) read an attribution classifier:
    DareU's rewards do, unless a control leaves the attribution reward out; Reveal-and-Release's default reveal reward
    reads no forget data."""
    extra = extra_inputs_of(method)
    return extra is not None and extra.reads_attributor(extra.arguments(**(extra_options or {})))


def _row_entry(method: str, extra_options: dict, data_args: DataArguments) -> dict:
    """What a row's report records beside its config (so that a report made otherwise is not reused): the options of
    its extra inputs where a control sets them, and the training of the classifier it reads, if any."""
    entry = {"extra_inputs": extra_options} if extra_options else {}
    if _reads_attributor(method, extra_options):
        entry["attributor"] = attributor_settings(default_attributor_config(data_args, output_dir=None))
    return entry


def _method_arguments(method, extra_options, prepared, bundle, data_args):
    """The options of a method's extra inputs (their defaults, or a control's `extra_options`), with the attribution
    classifier (trained once from the target and cached beside it) where they read one; None for a method without
    extra inputs."""
    extra = extra_inputs_of(method)
    if extra is None:
        return None
    arguments = extra.arguments(**extra_options)
    if not extra.reads_attributor(arguments):
        return arguments
    attributor, metrics = cached_attributor(
        prepared.folder, bundle, data_args, prepared.target, default_attributor_config(data_args, output_dir=None)
    )
    print(f"{method}: attribution classifier held-out accuracy {metrics['accuracy']:.3f}", flush=True)
    return dataclasses.replace(arguments, attributor=str(attributor))


@dataclass(frozen=True)
class DrawInputs:
    """What every row of a draw shares: its models, data, the retain model's evaluation, the probes and its folder."""

    prepared: PreparedModels
    bundle: UnlearningBundle
    data_args: DataArguments
    retain_result: dict
    probes: tuple[str, ...]
    probe_settings: ProbeSettings
    folder: Path


def _unlearn_and_evaluate(draw: DrawInputs, name: str, method: str, config, extra_options: dict):
    """Unlearn one draw with one method (the row `name`) and evaluate the model; returns its evaluation and its
    costs."""
    bundle, folder = draw.bundle, draw.folder
    method_args = _method_arguments(method, extra_options, draw.prepared, bundle, draw.data_args)
    started = time.time()
    with PeakMemory() as memory:
        trainer = unlearn(method, config, draw.prepared.target, bundle, draw.data_args, ModelConfig(), method_args)
    seconds = time.time() - started
    # Tokens of every forward pass of training (and, for DareU, of every rollout), as the trainers log them.
    tokens = max((entry["num_tokens"] for entry in trainer.state.log_history if "num_tokens" in entry), default=0)
    costs = {
        "wall time (s)": round(seconds, 1),
        "tokens/s": round(tokens / seconds, 1),
        "peak memory (MB)": memory.megabytes,
    }
    result = evaluate_model(
        trainer.model,
        trainer.processing_class,
        bundle,
        draw.data_args.prompt_format(),
        progress=False,
        probes=draw.probes,
        probe_settings=draw.probe_settings,
        retain=draw.retain_result,
    )
    # The unlearned model is not kept; its training log is (DareU's rewards, clip fraction and KL, each method's loss).
    (folder / f"{name}_log_history.json").write_text(json.dumps(trainer.state.log_history, indent=1, default=str))
    extra_inputs = METHODS[method][1].extra_inputs
    if extra_inputs == "rewards":
        plot_rewards(trainer.state.log_history, folder / f"{name}_reward.png", f"{name} on {bundle.name}")
    if extra_inputs == "reveal":
        plot_reveal_rewards(trainer.rounds, folder / "reveal_reward.png", f"Reveal-and-Release on {bundle.name}")
        costs["reveal reward per round"] = [round(r["reveal_reward"], 3) for r in trainer.rounds]
    return result, costs


def run_draw(
    args: BenchArguments,
    cache_args: CacheArguments,
    data_args: DataArguments,
    base: str | None,
    configs: dict[str, tuple[str, UnlearningConfig, dict]],
    probes: tuple[str, ...],
    folder: Path,
) -> dict:
    """One draw: its target and retain models (fine-tuned or reused, evaluated once per split and cached), then each
    entry of `configs` (row name -> method, its config and the options of its extra inputs) unlearned and evaluated
    against the retain model. Returns the draw's report of those rows; the unlearned models are deleted once evaluated.

    The draw's report.json in `folder` is rewritten after each row, so an interrupted bench, rerun with its
    --output_dir, keeps the rows it finished: a row that an earlier run in `folder` evaluated with the same models,
    method settings and probes is read back, not unlearned again. Rows of that report that this run does not ask for
    stay in the file (not in the returned report): a method added to a finished bench runs alone."""
    bundle = data_args.bundle()
    fmt, settings = data_args.prompt_format(), EvalSettings()
    probe_settings = ProbeSettings(**PRESETS[args.preset]["probes"])
    prepared = _prepared(args, cache_args, data_args, bundle, base)
    for name, (_, config, _) in configs.items():
        config.output_dir = str(folder / name)
    what = {
        "preset": args.preset,
        "draw": _draw_name(data_args),
        "forget_authors": data_args.forget_authors,
        "target_model": str(prepared.target),
        "retain_model": str(prepared.retain),
        "configs": {
            name: {"method": method, **config.to_dict(), **_row_entry(method, extra_options, data_args)}
            for name, (method, config, extra_options) in configs.items()
        },
        "probes": {"probes": list(probes), **asdict(probe_settings)},
    }
    defaults = {name: _field_defaults(config) for name, (_, config, _) in configs.items()}
    path = folder / "report.json"
    saved, reusable = _saved_rows(path, what, defaults)
    # Babble is improbable to the model before unlearning: every model's forget answers (on harmful answers, those to
    # the harmful prompts) are scored by the target once the rows are done. A draw interrupted before that has rows to
    # read back but not to return as they are.
    judged = FLUENCY_SPLITS.get(bundle.task)
    fluency_key = f"{judged}_generation_perplexity"
    if (
        saved is not None
        and reusable == set(configs)
        and (judged is None or all(fluency_key in model["summary"] for model in saved["models"].values()))
    ):
        print(f"  reusing every row of the report this draw's run finished: {path}", flush=True)
        return _report_of_rows(saved, configs)
    # Every row of the file, the requested ones as they finish: name -> (evaluation, costs, config entry).
    rows = {}
    if saved is not None:
        # In the file's order (reusable is a set, whose order changes from run to run).
        rows.update(
            {name: _saved_row(saved, name) for name in saved["configs"] if name not in configs or name in reusable}
        )
    cached = not args.target_model
    results = {}
    for name, model in ((RETAIN, prepared.retain), (TARGET, prepared.target)):
        started = time.time()
        results[name] = evaluate_folder(
            model, bundle, fmt, settings, progress=False, probes=probes, probe_settings=probe_settings, cache=cached
        )
        print(f"  {name}: evaluated in {time.time() - started:.0f}s", flush=True)
    info = {key: value for key, value in what.items() if key != "configs"}
    info.update(report_info(bundle, data_args, settings))
    if cached:
        # Models rebuilt on another number of threads differ slightly (docs/benchmarks.md): record which built these.
        threads = {TARGET: entry_threads(prepared.target), RETAIN: entry_threads(prepared.retain)}
        info["torch_threads"] = threads
        print(
            f"  torch threads the models were built on: target {threads[TARGET]}, retain {threads[RETAIN]}", flush=True
        )

    def write_report() -> dict:
        with FileLock(f"{path}.lock"):
            # Another run may be writing other rows of this draw into the same folder: the file's rows this run does
            # not ask for are taken as they are now.
            current, _ = _saved_rows(path, what, defaults)
            if current is not None:
                rows.update({name: _saved_row(current, name) for name in current["configs"] if name not in configs})
            report = build_report(
                {**results, **{name: row[0] for name, row in rows.items()}},
                {TARGET: TARGET, RETAIN: RETAIN},
                results[RETAIN],
                {
                    **info,
                    "configs": {name: row[2] for name, row in rows.items()},
                    "costs": {name: row[1] for name, row in rows.items()},
                },
            )
            write_whole(path, json.dumps(report, indent=2, default=str))
        return report

    spec = TASK_FIGURES[bundle.task]
    draw = DrawInputs(prepared, bundle, data_args, results[RETAIN], probes, probe_settings, folder)
    for name, (method, config, extra_options) in configs.items():
        if name in reusable:
            print(f"  {name}: read back from {path}", flush=True)
            continue
        result, costs = _unlearn_and_evaluate(draw, name, method, config, extra_options)
        shutil.rmtree(folder / name, ignore_errors=True)  # the unlearned model: evaluated, not kept
        rows[name] = (result, costs, what["configs"][name])
        write_report()
        summary, target = result["summary"], results[TARGET]["summary"]
        score_key = spec.figures[spec.score][0]
        print(
            f"  {name}: {spec.score} {summary[score_key]:.3g}, {spec.utility_label} {summary[spec.utility_key]:.3f}"
            f" (target {target[spec.utility_key]:.3f}), unlearned in {costs['wall time (s)']}s",
            flush=True,
        )
    # Rows read back from a finished report were judged then; a row kept from an interrupted draw was not yet.
    if judged is not None:
        judge = saved_model_perplexity_judge(str(prepared.target), fmt)
        for result in [*results.values(), *(rows[name][0] for name in configs)]:
            if fluency_key not in result["summary"]:
                judge_fluency(result, judge, "generation_perplexity", judged)
    return _report_of_rows(write_report(), configs)


def _saved_row(report: dict, name: str) -> tuple[dict, dict, dict]:
    """Row `name` of a saved draw report: its evaluation, costs and config entry."""
    result = {k: v for k, v in report["models"][name].items() if k != "role"}
    return result, report["costs"].get(name, {}), report["configs"][name]


def _report_of_rows(report: dict, rows) -> dict:
    """`report` with the target, the retain model and `rows` only, in their order."""
    models = report["models"]
    return {
        **report,
        "configs": {name: report["configs"][name] for name in rows},
        "costs": {name: report["costs"].get(name, {}) for name in rows},
        "models": {
            **{name: model for name, model in models.items() if model["role"] != UNLEARNED},
            **{name: models[name] for name in rows},
        },
    }


def _saved_rows(path: Path, what: dict, defaults: dict[str, dict]) -> tuple[dict | None, set[str]]:
    """The report at `path` when it was made of the same draw, models and probes as `what` (else None), and the rows
    of `what` it holds made with the same method settings. A field of a row's config, or of the classifier it reads,
    that the report lacks (one a later rlunlearn added) matches where this run leaves it at its default (`defaults`:
    row -> field -> default), the behaviour the report was made with. Output folders are not compared: a run folder
    that was moved or copied still resumes."""
    if not path.is_file():
        return None, set()
    report = json.loads(path.read_text())
    expected = json.loads(json.dumps(what, default=str))
    if any(report.get(key) != value for key, value in expected.items() if key != "configs"):
        return None, set()
    reusable, attributor_defaults = set(), _field_defaults(AttributorConfig)
    for row, config in expected["configs"].items():
        if row not in report["configs"]:
            continue
        saved = {k: v for k, v in report["configs"][row].items() if k != "output_dir"}
        del config["output_dir"]
        config = _without_later_fields(config, saved, defaults[row])
        if "attributor" in config and "attributor" in saved:
            config["attributor"] = _without_later_fields(config["attributor"], saved["attributor"], attributor_defaults)
        if saved == config:
            reusable.add(row)
    return report, reusable


def _without_later_fields(settings: dict, saved: dict, defaults: dict) -> dict:
    """`settings` without the fields `saved` lacks, where each is at its default (`defaults`); else as they are."""
    added = settings.keys() - saved.keys()
    if all(key in defaults and settings[key] == defaults[key] for key in added):
        return {key: value for key, value in settings.items() if key not in added}
    return settings


def _field_defaults(config) -> dict:
    """The fields of a config (or config class) that have a plain default, with their defaults as its report writes
    them."""
    defaults = {f.name: f.default for f in dataclasses.fields(config) if f.default is not dataclasses.MISSING}
    return json.loads(json.dumps(defaults, default=str))


# The figures aggregated over draws: label -> (summary key, the range the value can take). "MU / target" is each
# draw's model utility over that draw's target's.
DRAW_FIGURES = {
    "forget quality": ("forget_quality", (0.0, 1.0)),
    "KS statistic": ("forget_quality_ks", (0.0, 1.0)),
    "MU / target": (None, (0.0, math.inf)),
    "model utility": ("model_utility", (0.0, 1.0)),
    "forget ROUGE-L": ("forget_rougeL_recall", (0.0, 1.0)),
    "privleak": ("privleak", (-100.0, math.inf)),
    **{label: (key, None) for label, key in PROBE_COLUMNS.items() if label != "forget ROUGE-L"},
    # What the forget answers became: the same fact in other words, a wrong fact, babble.
    "paraphrased ROUGE-L": ("forget_paraphrased_rougeL_recall", (0.0, 1.0)),
    "perturbed ROUGE-L": ("forget_perturbed_rougeL_recall", (0.0, 1.0)),
    "repetition": ("forget_generation_repetition", (0.0, 1.0)),
    "perplexity under target": ("forget_generation_perplexity", (1.0, math.inf)),
    "privleak (grad norm)": ("privleak_gradnorm", (-100.0, math.inf)),
}
COST_FIGURES = ("wall time (s)", "tokens/s", "peak memory (MB)")
BENCH_COLUMNS = ["forget quality", "KS statistic", "MU / target", "forget ROUGE-L", "privleak", *COST_FIGURES]


@dataclass(frozen=True)
class TaskFigures:
    """What `bench` aggregates over the draws of a task, and how it ranks the methods: by `score` (a label of
    `figures`), among those whose utility (`utility_key` of the summary, over the target's: the `ratio` label, whose
    entry in `figures` has no key) stays at or above COLLAPSE_RATIO."""

    figures: dict
    score: str
    higher_is_better: bool
    utility_key: str
    utility_label: str
    ratio: str
    columns: list

    @property
    def paired(self) -> list:
        """The table's figures that a control is compared on: its columns but the costs."""
        return [label for label in self.columns if label not in COST_FIGURES]


TASK_FIGURES = {
    "entities": TaskFigures(
        DRAW_FIGURES, "forget quality", True, "model_utility", "model utility", "MU / target", BENCH_COLUMNS
    ),
    # LLMU's: the harmful rate of sampled answers to held-out harmful prompts (lower is better), the normal answers.
    "harmful": TaskFigures(
        {
            "harmful rate": ("harmful_rate", (0.0, 1.0)),
            "greedy": ("harmful_rate_greedy", (0.0, 1.0)),
            "forget prompts": ("harmful_rate_forget_prompts", (0.0, 1.0)),
            "held-out recipes": ("harmful_rate_held_out_prompts", (0.0, 1.0)),
            "normal ROUGE-L": ("normal_rougeL_recall", (0.0, 1.0)),
            "normal / target": (None, (0.0, math.inf)),
            "normal similarity": ("normal_output_similarity", (0.0, 1.0)),
            "perplexity under target": ("harmful_generation_perplexity", (1.0, math.inf)),
        },
        "harmful rate",
        False,
        "normal_rougeL_recall",
        "normal ROUGE-L",
        "normal / target",
        [
            "harmful rate",
            "greedy",
            "forget prompts",
            "held-out recipes",
            "normal / target",
            "normal similarity",
            "perplexity under target",
            *COST_FIGURES,
        ],
    ),
    # WMDP's: multiple-choice accuracy on the hazard (lower is better, chance the floor) and on general knowledge.
    "wmdp": TaskFigures(
        {
            "hazard accuracy": ("hazard_accuracy", (0.0, 1.0)),
            "general accuracy": ("general_accuracy", (0.0, 1.0)),
            "general / target": (None, (0.0, math.inf)),
            "chance": ("hazard_chance", (0.0, 1.0)),
        },
        "hazard accuracy",
        False,
        "general_accuracy",
        "general accuracy",
        "general / target",
        ["hazard accuracy", "general accuracy", "general / target", "chance", *COST_FIGURES],
    ),
    # MUSE's: verbatim and knowledge memorisation of the forget text (lower is better), privacy leakage against the
    # retain model (0 is ideal), knowledge of the retain text (utility).
    "muse": TaskFigures(
        {
            "VerbMem": ("verbmem_rougeL_f1", (0.0, 1.0)),
            "KnowMem forget": ("knowmem_forget_rougeL_f1", (0.0, 1.0)),
            "KnowMem retain": ("knowmem_retain_rougeL_f1", (0.0, 1.0)),
            "retain / target": (None, (0.0, math.inf)),
            "privleak": ("privleak", (-100.0, math.inf)),
            "perplexity under target": ("verbmem_forget_generation_perplexity", (1.0, math.inf)),
        },
        "VerbMem",
        False,
        "knowmem_retain_rougeL_f1",
        "KnowMem retain",
        "retain / target",
        ["VerbMem", "KnowMem forget", "retain / target", "privleak", "perplexity under target", *COST_FIGURES],
    ),
}


def _draw_figures(report: dict, name: str, spec: TaskFigures) -> dict[str, float | None]:
    """One model's figures on one draw: label -> value, the utility as a ratio to that draw's target's, and its
    costs."""
    summary = report["models"][name]["summary"]
    target_utility = report["models"][TARGET]["summary"].get(spec.utility_key)
    figures = {}
    for label, (key, _) in spec.figures.items():
        if key is None:
            utility = summary.get(spec.utility_key)
            figures[label] = utility / target_utility if target_utility and utility is not None else None
        else:
            figures[label] = summary.get(key)
    for label in COST_FIGURES:
        figures[label] = report["costs"].get(name, {}).get(label)
    return figures


def aggregate_draws(reports: list[dict], spec: TaskFigures = TASK_FIGURES["entities"]) -> dict[str, dict]:
    """Each model's figures over the draws' reports: label -> `mean_interval` (mean, 95% interval, values)."""
    bounds = {label: b for label, (_, b) in spec.figures.items()}
    aggregated = {}
    for name in reports[0]["models"]:
        by_draw = [_draw_figures(report, name, spec) for report in reports]
        aggregated[name] = {
            "role": reports[0]["models"][name]["role"],
            **{label: mean_interval([d[label] for d in by_draw], bounds=bounds.get(label)) for label in by_draw[0]},
        }
    return aggregated


def rank_methods(aggregated: dict[str, dict], spec: TaskFigures = TASK_FIGURES["entities"]) -> dict[str, str]:
    """Each model's place: the unlearned methods that kept utility ranked by mean forget quality (the task's score;
    1 is best), the others marked collapsed (unrated where the target's utility is 0); target and retain are
    references."""
    status = {}
    kept = []
    for name, figures in aggregated.items():
        if figures["role"] != UNLEARNED:
            status[name] = figures["role"]
        elif figures[spec.ratio]["mean"] is None:
            status[name] = "unrated"  # the target has no utility to keep: nothing to rank against
        elif figures[spec.ratio]["mean"] < COLLAPSE_RATIO:
            status[name] = "collapsed"
        else:
            kept.append(name)

    def best_first(name: str) -> float:
        value = aggregated[name][spec.score]["mean"]
        if value is None:
            return math.inf
        return -value if spec.higher_is_better else value

    for place, name in enumerate(sorted(kept, key=best_first), 1):
        status[name] = str(place)
    return status


def against_controls(reports: list[dict], spec: TaskFigures = TASK_FIGURES["entities"]) -> dict[str, dict]:
    """For each control that ran beside its row: each figure of the task's table (costs aside), the row's minus the
    control's, paired by draw (both unlearned the same draw's target), as `mean_interval`: what the row's figures owe
    to what the control leaves out."""
    differences = {}
    for control, entry in CONTROLS.items():
        row = entry["row"]
        if control not in reports[0]["models"] or row not in reports[0]["models"]:
            continue
        pairs = [(_draw_figures(report, row, spec), _draw_figures(report, control, spec)) for report in reports]
        differences[control] = {
            "row": row,
            **{
                label: mean_interval(
                    [
                        None if mine[label] is None or its[label] is None else mine[label] - its[label]
                        for mine, its in pairs
                    ]
                )
                for label in spec.paired
            },
        }
    return differences


def _interval_cell(figure: dict) -> str | float | None:
    """'mean [low, high]' (mean alone for one draw)."""
    if figure["mean"] is None:
        return None
    if figure["low"] is None:
        return figure["mean"]
    return f"{format_value(figure['mean'])} [{format_value(figure['low'])}, {format_value(figure['high'])}]"


def draw_tables(
    aggregated: dict[str, dict], columns: list[str], spec: TaskFigures = TASK_FIGURES["entities"]
) -> list[dict]:
    """Rows of a table of aggregated figures, in the ranking's order (references first, collapsed last)."""
    status = rank_methods(aggregated, spec)
    order = {TARGET: -2, RETAIN: -1, "collapsed": 10**6, "unrated": 10**6 + 1}
    names = sorted(aggregated, key=lambda n: order.get(status[n], int(status[n]) if status[n].isdigit() else 0))
    return [
        {"model": name, "rank": status[name], **{c: _interval_cell(aggregated[name][c]) for c in columns}}
        for name in names
    ]


BENCH_ANSWER_COLUMNS = [
    "paraphrased ROUGE-L",
    "perturbed ROUGE-L",
    "repetition",
    "perplexity under target",
    "privleak (grad norm)",
]
# The probes' columns beside the forget ROUGE-L they test (forget ROUGE-L itself is in the main table).
BENCH_PROBE_COLUMNS = [label for label in PROBE_COLUMNS if label != "forget ROUGE-L"]


def _method_config(preset: str, row: str, **overrides) -> UnlearningConfig:
    """The config of the preset's row at its settings (and `overrides`), as the bench runs it."""
    return preset_unlearning_config(
        preset,
        row,
        output_dir="unused",
        report_to="none",
        save_strategy="no",
        logging_steps=5,
        disable_tqdm=True,
        **overrides,
    )


def bench_unlearn(args: BenchArguments, cache_args: CacheArguments, run: Path) -> dict:
    """`rlunlearn bench unlearn`, which `BenchArguments` describes; returns the summary it writes."""
    methods = _check(args)
    requested = args.probes or (["all"] if args.task == "tofu" else ["none"])
    probes = resolve_probes([] if requested == ["none"] else requested)
    check_probes_apply(_bundle_task(args.task), probes)
    validation = _read_validation(args.validation_report, args) if args.validation_report else None
    args.output_dir = str(run)
    base = None if args.target_model else _base_model(args, cache_args)
    reports = []
    for k, data_args in enumerate(draw_data(args)):
        print(f"Draw {k + 1}: {_draw_name(data_args)}", flush=True)
        folder = run / f"draw-{k + 1}"
        folder.mkdir(parents=True, exist_ok=True)
        configs = {
            row: (
                preset_method(args.preset, row),
                _method_config(args.preset, row, **_tuned(validation, row)),
                preset_row(row)[1],
            )
            for row in methods
        }
        reports.append(run_draw(args, cache_args, data_args, base, configs, probes, folder))
    spec = TASK_FIGURES[_bundle_task(args.task)]
    aggregated = aggregate_draws(reports, spec)
    summary = {
        "preset": args.preset,
        "task": args.task,
        "draws_from": args.draws_from,
        "forget_shape": args.forget_shape,
        "draws": [r["draw"] for r in reports],
        "collapse_ratio": COLLAPSE_RATIO,
        "models": aggregated,
        "ranking": rank_methods(aggregated, spec),
    }
    if validation is not None:
        summary["rank_agreement_with_validation"] = _rank_agreement(validation, aggregated, spec)
    controls = against_controls(reports, spec)
    if controls:
        summary["against_controls"] = controls
    _print_bench(summary, probes, run, reports[0]["bundle"]["name"], spec)
    return summary


def _bundle_task(task: str) -> str:
    """The kind of data a bench task forgets, as `Bundle.task` names it (TOFU's authors are entities)."""
    return "entities" if task == "tofu" else task


def _read_validation(path: str, args: BenchArguments) -> dict:
    """The choices of a tune.json, checked to come from the same preset and task as this run."""
    try:
        tune = json.loads(Path(path).read_text())
        chosen, preset, task = tune["chosen"], tune["preset"], tune.get("task", "tofu")
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"--validation_report {path!r} is not a tune.json of `bench tune` ({error}).") from None
    if (preset, task) != (args.preset, args.task):
        raise ValueError(
            f"--validation_report {path!r} was tuned with --preset {preset} --task {task}; this run is --preset "
            f"{args.preset} --task {args.task}: tune that task first (`rlunlearn bench tune --task {args.task}`)."
        )
    return chosen


def _tuned(validation: dict | None, row: str) -> dict:
    """The config override of a row tuned in --validation_report: its chosen learning rate (a control's row's)."""
    row = preset_row(row)[0]
    return {"learning_rate": validation[row]["learning_rate"]} if validation and row in validation else {}


def _rank_agreement(validation: dict, aggregated: dict, spec: TaskFigures = TASK_FIGURES["entities"]) -> float | None:
    """Kendall's tau between the task's mean score (forget quality on TOFU) on the validation draws (at the chosen
    settings) and on this run's draws, over the methods tuned there that collapsed in neither (a row `bench tune` did
    not run is left out)."""
    status = rank_methods(aggregated, spec)
    kept = [n for n in aggregated if status[n].isdigit() and n in validation and not validation[n]["collapsed"]]
    return rank_agreement(
        {n: validation[n][spec.score] for n in kept},
        {n: aggregated[n][spec.score]["mean"] for n in kept},
    )


def _draw_name(data_args: DataArguments):
    """What a draw is: its forget authors (TOFU), or its generated world (a stand-in task)."""
    if data_args.data in STANDIN_TASKS:
        return f"seed {data_args.generator_seed}"
    return data_args.forget_authors or data_args.forget_split


def _print_bench(summary: dict, probes, run: Path, data_name: str, spec: TaskFigures) -> None:
    aggregated = summary["models"]
    draws = len(summary["draws"])
    if summary["task"] != "tofu":
        rows = draw_tables(aggregated, spec.columns, spec)
        title = (
            f"{summary['task']} stand-in, {summary['preset']} preset: {draws} generated world(s) from the "
            f"{summary['draws_from']} pool ({', '.join(summary['draws'])}); mean [95% interval] over them; rank by "
            f"{spec.score} ({'highest' if spec.higher_is_better else 'lowest'} first) among the methods that kept "
            f">= {COLLAPSE_RATIO}x the target's {spec.utility_label}"
        )
        print(f"\n{title}\n{format_table(rows, ['model', 'rank', *spec.columns])}")
        _write_bench(summary, run, markdown_table(rows, ["model", "rank", *spec.columns]), spec)
        return
    rows = draw_tables(aggregated, BENCH_COLUMNS)
    title = (
        f"{data_name}, {summary['preset']} preset: {draws} draw(s) of forget authors from the {summary['draws_from']} "
        f"pool ({summary['draws']}); mean [95% interval] over the draws; rank by forget quality among the methods "
        f"that kept >= {COLLAPSE_RATIO}x the target's utility"
    )
    print(f"\n{title}\n{format_table(rows, ['model', 'rank', *BENCH_COLUMNS])}")
    markdown = markdown_table(rows, ["model", "rank", *BENCH_COLUMNS])
    answer_rows = draw_tables(aggregated, BENCH_ANSWER_COLUMNS)
    print(f"\nThe forget answers:\n{format_table(answer_rows, ['model', *BENCH_ANSWER_COLUMNS])}")
    markdown += "\n" + markdown_table(answer_rows, ["model", *BENCH_ANSWER_COLUMNS])
    if probes:
        probe_rows = draw_tables(aggregated, BENCH_PROBE_COLUMNS)
        print(f"\nRobustness probes (forget split):\n{format_table(probe_rows, ['model', *BENCH_PROBE_COLUMNS])}")
        markdown += "\n" + markdown_table(probe_rows, ["model", *BENCH_PROBE_COLUMNS])
    plot_draws(aggregated, run / "tradeoff.png", title=f"{data_name}: mean over {draws} draw(s)")
    _write_bench(summary, run, markdown, spec)


def _write_bench(summary: dict, run: Path, markdown: str, spec: TaskFigures) -> None:
    if "rank_agreement_with_validation" in summary:
        tau = summary["rank_agreement_with_validation"]
        print(f"\nKendall's tau, ranking by {spec.score} on the validation draws vs these: {format_value(tau)}")
    controls = summary.get("against_controls", {})
    if controls:
        labels = spec.paired
        rows = [
            {
                "row minus control": f"{d['row']} minus {control}",
                **{label: _interval_cell(d[label]) for label in labels},
            }
            for control, d in controls.items()
        ]
        draws = max(d[label]["n"] for d in controls.values() for label in labels)
        print(
            f"\nEach row minus its control, paired by draw: mean [95% interval] over {draws} draw(s)\n"
            f"{format_table(rows, ['row minus control', *labels])}"
        )
        markdown += "\n" + markdown_table(rows, ["row minus control", *labels])
    (run / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    (run / "table.md").write_text(markdown)
    print(f"Summary: {run / 'summary.json'}; per-draw reports: {run}/draw-*/report.json; table: {run / 'table.md'}")


def bench_tune(args: TuneArguments, cache_args: CacheArguments, run: Path) -> dict:
    """`rlunlearn bench tune`, which `TuneArguments` describes; returns what it writes to tune.json."""
    if args.draws_from != VALIDATION:
        raise ValueError("hyperparameters are chosen on the validation draws only.")
    if "grid" not in PRESETS[args.preset]:
        raise ValueError(f"the {args.preset} preset has no grid to tune.")
    methods = _check(args)
    controls = [m for m in methods if m in CONTROLS]
    if controls:
        raise ValueError(
            f"{', '.join(controls)}: a control is not tuned; it runs at its row's rate (tune "
            f"{', '.join(sorted({preset_row(c)[0] for c in controls}))})."
        )
    args.output_dir = str(run)
    base = _base_model(args, cache_args)
    grid = PRESETS[args.preset]["grid"]
    spec = TASK_FIGURES[_bundle_task(args.task)]
    reports = []
    for k, data_args in enumerate(draw_data(args)):
        print(f"Validation draw {k + 1}: {_draw_name(data_args)}", flush=True)
        folder = run / f"draw-{k + 1}"
        folder.mkdir(parents=True, exist_ok=True)
        configs = {
            f"{row}@{rate:g}": (
                preset_method(args.preset, row),
                _method_config(args.preset, row, learning_rate=rate),
                {},
            )
            for row in methods
            for rate in grid[row]
        }
        reports.append(run_draw(args, cache_args, data_args, base, configs, (), folder))
    aggregated = aggregate_draws(reports, spec)
    sign = 1 if spec.higher_is_better else -1
    retain_score = aggregated[RETAIN][spec.score]["mean"]
    chosen = {}
    for method in methods:
        settings = {rate: aggregated[f"{method}@{rate:g}"] for rate in grid[method]}
        kept = [r for r, f in settings.items() if (f[spec.ratio]["mean"] or 0) >= COLLAPSE_RATIO]
        if kept:
            best = max(kept, key=lambda r: (sign * settings[r][spec.score]["mean"], settings[r][spec.ratio]["mean"]))
        else:
            best = max(settings, key=lambda r: settings[r][spec.ratio]["mean"] or 0)
        # The retain model's score is what forgetting aims at: past it (below MUSE's retain VerbMem, WMDP's chance)
        # a higher rate has nothing left to remove, though the rule, which ranks by the score alone, may prefer it.
        reaches_retain = bool(kept) and sign * settings[best][spec.score]["mean"] >= sign * retain_score
        # A kept choice at an end of the grid that the score points beyond: the highest rate (short of the retain
        # model's score), or the lowest where the next rate kept utility and scored worse (not where it collapsed:
        # then the choice is bracketed).
        rates = sorted(grid[method])
        edge = None
        if kept and len(rates) > 1:
            if best == rates[-1] and not reaches_retain:
                edge = "highest"
            elif best == rates[0] and rates[1] in kept:
                edge = "lowest"
        chosen[method] = {
            "learning_rate": best,
            spec.score: settings[best][spec.score]["mean"],
            spec.ratio: settings[best][spec.ratio]["mean"],
            "collapsed": not kept,
            "grid_edge": edge,
            "reaches_retain": reaches_retain,
        }
    result = {
        "preset": args.preset,
        "task": args.task,
        "rule": TUNING_RULE,
        "draws": [r["draw"] for r in reports],
        "grid": {m: grid[m] for m in methods},
        "settings": aggregated,
        "chosen": chosen,
    }
    (run / "tune.json").write_text(json.dumps(result, indent=2, default=str))
    columns = ["forget quality", "MU / target", "forget ROUGE-L"] if args.task == "tofu" else spec.columns
    rows = draw_tables(aggregated, columns, spec)
    print(
        f"\nEvery setting on the validation draws {result['draws']}:\n{format_table(rows, ['model', 'rank', *columns])}"
    )
    print(f"\nChosen ({TUNING_RULE}):")
    for method, choice in chosen.items():
        note = " (collapsed at every setting)" if choice["collapsed"] else ""
        if choice["grid_edge"]:
            side = "higher" if choice["grid_edge"] == "highest" else "lower"
            note = f" (the grid's {choice['grid_edge']} rate: a {side} one may do better; widen the grid to see)"
        elif choice["reaches_retain"] and choice["learning_rate"] == max(grid[method]):
            note = (
                f" (the grid's highest rate, at or past the retain model's {spec.score} {format_value(retain_score)}: "
                "a higher one has nothing left to remove)"
            )
        print(
            f"  {method}: learning_rate {choice['learning_rate']:g}: {spec.score} {format_value(choice[spec.score])}, "
            f"{spec.ratio} {format_value(choice[spec.ratio])}{note}"
        )
    print(f"Results: {run / 'tune.json'}")
    return result


def plot_rewards(log_history: list[dict], path: Path, title: str) -> None:
    """The mean reward of each logged step (and each reward function's), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logged = [entry for entry in log_history if "reward" in entry]
    figure, axis = plt.subplots(figsize=(6, 4))
    for key in ["reward"] + sorted(k for k in logged[0] if k.startswith("rewards/") and k.endswith("/mean")):
        axis.plot([e["step"] for e in logged], [e[key] for e in logged], label=key.removesuffix("/mean"))
    axis.set_xlabel("step")
    axis.set_ylabel("mean reward")
    axis.set_title(title)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_reveal_rewards(rounds: list[dict], path: Path, title: str) -> None:
    """Reveal-and-Release's reveal reward at the start of each round (the last point: after the last release)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot([r["round"] for r in rounds], [r["reveal_reward"] for r in rounds], marker="o")
    axis.set_xlabel("round (reveal before its release)")
    axis.set_ylabel("mean reveal reward")
    axis.set_xticks([r["round"] for r in rounds])
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_draws(aggregated: dict[str, dict], path: Path, title: str) -> None:
    """Mean forget quality (log scale) against mean model utility over the draws, with the 95% intervals as error
    bars; target and retain marked, collapsed methods hollow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    status = rank_methods(aggregated)
    figure, axes = plt.subplots(figsize=(6.4, 4.8))
    colors = {TARGET: "tab:red", RETAIN: "tab:green"}
    for name, figures in aggregated.items():
        quality, utility = figures["forget quality"], figures["model utility"]
        if quality["mean"] is None or utility["mean"] is None:
            continue
        y = max(quality["mean"], 1e-30)  # a p-value of exactly 0 has no place on a log axis
        yerr = None
        if quality["low"] is not None:
            yerr = [[y - max(quality["low"], 1e-30)], [max(quality["high"] - y, 0.0)]]
        xerr = (
            None
            if utility["low"] is None
            else [[utility["mean"] - utility["low"]], [utility["high"] - utility["mean"]]]
        )
        color = colors.get(figures["role"], "tab:blue")
        face = "none" if status[name] == "collapsed" else color
        axes.errorbar(utility["mean"], y, xerr=xerr, yerr=yerr, fmt="o", color=color, mfc=face, capsize=3)
        axes.annotate(name, (utility["mean"], y), textcoords="offset points", xytext=(6, 6), fontsize=9)
    axes.set_yscale("log")
    axes.axhline(0.05, color="grey", linestyle=":", linewidth=1)
    axes.set_xlabel("Model utility (mean over draws)")
    axes.set_ylabel("Forget quality (mean over draws, log)")
    axes.set_title(title)
    axes.grid(True, which="major", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


MEMORY_COLUMNS = [
    "precision",
    "parameters (M)",
    "trainable (M)",
    "model footprint (MB)",
    "peak memory (MB)",
    "peak / fp32",
    "peak above start (MB)",
    "s / step",
]


def _return_freed_memory() -> None:
    """Hand the heap that loading freed back to the OS (glibc's malloc_trim), so that the resident set measures what
    the process holds rather than what the allocator kept."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name:
        libc = ctypes.CDLL(name)
        if hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)


@quiet_console()  # a spawned process starts without the command's console
def _measure_memory(mode: str, model_dir: str, args: MemoryBenchArguments, queue) -> None:
    """In a fresh process (so that no earlier run's memory counts): load the model in `mode`, run `args.steps`
    unlearning steps, and report its footprint and the peak memory of the steps."""
    from trl import get_peft_config

    from .data import generate_authors, sft_dataset

    start_rss = psutil.Process(os.getpid()).memory_info().rss
    model_args = ModelConfig(
        model_name_or_path=model_dir, lora_r=args.lora_r, lora_target_modules=["all-linear"], **MEMORY_MODES[mode]
    )
    model = load_model(model_args)
    config_class, trainer_class = METHODS[args.method]
    config = config_class(
        output_dir=os.path.join(model_dir, f"run-{mode}"),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        bf16=bf16_default() and mode != "fp32",
        activation_checkpointing=args.activation_checkpointing,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=args.steps,
    )
    bundle = generate_authors(20, 2)
    trainer = trainer_class(
        model=model,
        args=config,
        train_dataset=sft_dataset(bundle.forget),
        retain_dataset=sft_dataset(bundle.retain) if trainer_class.needs_retain(config) else None,
        processing_class=load_tokenizer(model_dir),
        peft_config=get_peft_config(model_args),
    )
    if not torch.cuda.is_available():
        _return_freed_memory()
    footprint = trainer.model.get_memory_footprint()
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    started = time.time()
    with PeakMemory() as memory:
        trainer.train()
    queue.put(
        {
            "precision": mode,
            "trainable (M)": float(f"{trainable / 1e6:.3g}"),
            "model footprint (MB)": round(footprint / 2**20, 1),
            "peak memory (MB)": memory.megabytes,
            "peak above start (MB)": round(memory.megabytes - (0 if memory.cuda else start_rss / 2**20), 1),
            "s / step": round((time.time() - started) / args.steps, 2),
        }
    )


def _check_modes(modes: list[str]) -> None:
    unknown = [mode for mode in modes if mode not in MEMORY_MODES]
    if unknown:
        raise ValueError(f"unknown --modes {unknown}; the modes are {list(MEMORY_MODES)}.")


def _random_llama(folder: Path, model_preset: str, vocab_size: int) -> int:
    """A random Llama of `model_preset`'s size, with a tokenizer trained on the generated authors, saved in `folder` in
    bf16 (as checkpoints are published); returns its number of parameters."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from .data import generate_authors
    from .models import train_tokenizer

    tokenizer = train_tokenizer(generate_authors(20, 2).corpus(), 4096)
    size = MODEL_PRESETS[model_preset]
    config = LlamaConfig(
        vocab_size=max(vocab_size, len(tokenizer)),
        num_key_value_heads=size["num_attention_heads"],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        **size,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.to(torch.bfloat16).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model.num_parameters()


def bench_memory(args: MemoryBenchArguments, cache_args: CacheArguments, run: Path) -> list[dict]:
    """`rlunlearn bench memory`, which `MemoryBenchArguments` describes; returns the rows it prints."""
    import multiprocessing

    _check_modes(args.modes)
    model_dir = run / "model"
    parameters = _random_llama(model_dir, args.model_preset, args.vocab_size)

    context = multiprocessing.get_context("spawn")
    rows = []
    for mode in args.modes:
        queue = context.Queue()
        process = context.Process(target=_measure_memory, args=(mode, str(model_dir), args, queue))
        process.start()
        rows.append({"parameters (M)": float(f"{parameters / 1e6:.3g}"), **queue.get()})
        process.join()
        print(f"{mode}: peak {rows[-1]['peak memory (MB)']} MB", flush=True)
    shutil.rmtree(model_dir)
    fp32 = next((row["peak memory (MB)"] for row in rows if row["precision"] == "fp32"), None)
    for row in rows:
        row["peak / fp32"] = round(row["peak memory (MB)"] / fp32, 3) if fp32 else None
    where = "GPU memory allocated" if torch.cuda.is_available() else "process resident set"
    title = f"{args.method} steps on a random {args.model_preset} Llama, batch {args.batch_size} ({where})"
    _write_rows(run, "memory", title, rows, MEMORY_COLUMNS, {"arguments": vars(args), "where": where})
    return rows


def _write_rows(run: Path, stem: str, title: str, rows: list[dict], columns: list[str], info: dict) -> None:
    """Print a bench task's table under its title; write it as `<stem>.md`, with `info`, as `<stem>.json`."""
    print(f"\n{title}:\n{format_table(rows, columns)}")
    (run / f"{stem}.json").write_text(json.dumps({**info, "rows": rows}, indent=2))
    (run / f"{stem}.md").write_text(markdown_table(rows, columns))
    print(f"Results: {run / f'{stem}.json'}; table: {run / f'{stem}.md'}")


GPU_CHECK_COLUMNS = ["method", "precision", "steps", "s / step", "tokens/s", "peak memory (MB)", "error"]
# Reveal-and-Release on a random model: one round, which releases whatever it revealed (a random model reveals
# nothing that would pass the usual threshold and reward, and the round would stop before it trains).
GPU_CHECK_OVERRIDES = {"reveal_release": {"num_rounds": 1, "reveal_threshold": 0.0, "stop_reward": 0.0}}


def bench_gpu_check(args: GpuCheckArguments, cache_args: CacheArguments, run: Path) -> list[dict]:
    """`rlunlearn bench gpu-check`, which `GpuCheckArguments` describes; returns the rows it prints."""
    import gc

    rows_of_preset = PRESETS["gpu"]["unlearning"]
    methods = args.methods or list(rows_of_preset)
    unknown = [m for m in methods if m not in rows_of_preset]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; the gpu preset runs: {', '.join(rows_of_preset)}.")
    _check_modes(args.modes)
    check_vllm(args)
    cuda = torch.cuda.is_available()
    where = torch.cuda.get_device_name() if cuda else "CPU (no GPU visible: CPU figures, resident set as memory)"
    model_dir = run / "model"
    parameters = _random_llama(model_dir, args.model_preset, args.vocab_size)
    data_args = DataArguments()
    bundle = data_args.bundle()
    print(f"gpu-check on {where}: a random {args.model_preset} Llama ({parameters / 1e6:.0f}M parameters)", flush=True)
    rows = []
    for name in methods:
        method = preset_method("gpu", name)
        method_args = _gpu_check_method_arguments(method, bundle, data_args, model_dir, run)
        # DareU's config (TRL's GRPOConfig) has no padding_free; only the sampling methods' have use_vllm.
        config_class = METHODS[method][0]
        options = {
            **({"padding_free": True} if args.padding_free and hasattr(config_class, "padding_free") else {}),
            **({"use_vllm": True} if args.use_vllm and hasattr(config_class, "use_vllm") else {}),
        }
        for mode in args.modes:
            output_dir = run / f"{name}-{mode}"
            config = preset_unlearning_config(
                "gpu",
                name,
                output_dir=str(output_dir),
                max_steps=args.steps,
                per_device_train_batch_size=args.batch_size,
                gradient_accumulation_steps=1,
                bf16=bf16_default() and mode != "fp32",
                logging_steps=1,
                report_to="none",
                save_strategy="no",
                disable_tqdm=True,
                **GPU_CHECK_OVERRIDES.get(method, {}),
                **options,
            )
            model_args = ModelConfig(
                model_name_or_path=str(model_dir),
                lora_r=args.lora_r,
                lora_target_modules=["all-linear"],
                attn_implementation=args.attn_implementation,
                **MEMORY_MODES[mode],
            )
            try:
                with PeakMemory() as memory:
                    trainer = unlearn(method, config, model_dir, bundle, data_args, model_args, method_args)
                costs = _step_costs(trainer.state.log_history)
                rows.append(
                    {
                        "method": name,
                        "precision": mode,
                        **costs,
                        "peak memory (MB)": memory.megabytes,
                        "error": "" if costs["steps"] else "trained no step",
                    }
                )
                del trainer
            except Exception as error:  # a check reports what failed on this machine and goes on
                rows.append({"method": name, "precision": mode, "error": f"{type(error).__name__}: {error}"[:300]})
            shutil.rmtree(output_dir, ignore_errors=True)
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
            print(f"  {name} ({mode}): {rows[-1].get('s / step')} s/step {rows[-1]['error']}", flush=True)
    shutil.rmtree(model_dir)
    title = f"Every method, {args.steps} steps of batch {args.batch_size} on {where}"
    _write_rows(run, "gpu_check", title, rows, GPU_CHECK_COLUMNS, {"arguments": vars(args), "where": where})
    return rows


def _gpu_check_method_arguments(method, bundle, data_args, model_dir: Path, run: Path):
    """A method's extra inputs at their defaults; DareU's attribution classifier trained for a few steps from the
    random model (the check times unlearning, not the classifier)."""
    if not _reads_attributor(method):
        return None
    attributor, _ = cached_attributor(run, bundle, data_args, model_dir, AttributorConfig(output_dir=None, max_steps=2))
    return extra_inputs_of(method).arguments(attributor=str(attributor))


def _step_costs(log_history: list[dict]) -> dict:
    """Steps, seconds per step and tokens per second of a run, from its trainers' logs (Reveal-and-Release logs a
    trainer run per module): the training time the trainers log, model loading left out."""
    steps = sum(1 for entry in log_history if "loss" in entry)
    seconds = sum(entry["train_runtime"] for entry in log_history if "train_runtime" in entry)
    tokens = max((entry["num_tokens"] for entry in log_history if "num_tokens" in entry), default=0)
    return {
        "steps": steps,
        "s / step": round(seconds / steps, 3) if steps and seconds else None,
        "tokens/s": round(tokens / seconds, 1) if tokens and seconds else None,
    }


# Each `rlunlearn bench` task (its options: arguments.BENCH_TASK_ARGUMENTS).
TASKS = {
    "unlearn": bench_unlearn,
    "tune": bench_tune,
    "eval": bench_eval,
    "memory": bench_memory,
    "speed": bench_speed,
    "gpu-check": bench_gpu_check,
}
