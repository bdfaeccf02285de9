"""Benchmarks that print their figures: the evaluation suite's speed, and every method on a named preset.

Speed, memory and quality targets are checked here (and by the scripts under examples/), never by timed assertions in
tests.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil
import torch
from trl import ModelConfig

from rlunlearn.trainers import METHODS
from rlunlearn.trainers.utils import bf16_default

from .attribution import AttributorConfig, RewardArguments, cached_attributor
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
    format_table,
    markdown_table,
    plot_tradeoff,
    resolve_probes,
    summary_rows,
)
from .finetune import FinetuneConfig
from .models import MODEL_PRESETS, load_model, load_tokenizer
from .pipeline import (
    CacheArguments,
    DataArguments,
    PreparedModels,
    ScratchModelArguments,
    prepare_models,
    report_info,
    unlearn,
)
from .reveal import RevealArguments

# Presets: the data, the model built from scratch, and each method's unlearning hyperparameters. A 4-layer model trained
# from scratch learns (and unlearns) far faster than a pretrained LLM, so it takes larger steps than the papers' 1e-5;
# each method's learning rate is the largest of a grid (5 epochs) that kept model utility >= 0.9x the target's.
PRESETS = {
    "cpu": {
        "data": {"data": "tofu", "forget_split": "forget01", "num_retain_authors": 18},
        "scratch": {"model_preset": "small"},
        "unlearning": {
            "ga": {"learning_rate": 5e-5, "num_train_epochs": 5},
            "graddiff": {"learning_rate": 1e-4, "num_train_epochs": 5},
            "npo": {"learning_rate": 3e-4, "num_train_epochs": 5},
            "simnpo": {"learning_rate": 2e-4, "num_train_epochs": 5},
            "idkdpo": {"learning_rate": 2e-4, "num_train_epochs": 5},
            "llmu": {"learning_rate": 1e-4, "num_train_epochs": 5},
            "flat": {"learning_rate": 3e-5, "num_train_epochs": 5},
            # 40 prompts x 4 answers an epoch; short answers keep the CPU rollouts affordable.
            "dareu": {
                "learning_rate": 2e-4,
                "num_train_epochs": 4,
                "num_generations": 4,
                "max_completion_length": 48,
                "logging_steps": 5,
            },
            # Named targets only: the forget set is what the model reveals. LoRA modules take larger steps: of 1e-4,
            # 3e-4, 5e-4 and 1e-3, 5e-4 with a retain module forgot the most at >= 0.9x utility (without it, utility
            # at 5e-4 fell below 0.7x for one seed of the LoRA initialisation).
            "reveal_release": {
                "learning_rate": 5e-4,
                "retain_module": True,
                "num_train_epochs": 5,
                "num_rounds": 3,
                "reveal_steps": 16,
                "reveal_generations": 8,
                "max_completion_length": 48,
            },
        },
        # 40 forget examples: small batches give enough steps.
        "unlearning_common": {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 1, "warmup_steps": 0.0},
        # The relearning attack: at the fine-tuning rate (1e-3) ten steps wreck even the target's held-out answers
        # (ROUGE-L 0.93 -> 0.34); at 3e-4 they hold (0.79) while NPO's come back (0.14 -> 0.45, the retain model's 0.16).
        "probes": {"relearning_learning_rate": 3e-4},
    },
    # TOFU's standard setting on a pretrained chat model (--model_name_or_path, fine-tuned here with TOFU's recipe, or
    # --target_model and --retain_model already fine-tuned, e.g. open-unlearning's tofu_Llama-3.2-1B-Instruct_full and
    # _retain90): forget10, 20 authors forgotten and 180 kept, every method at its paper's defaults (the preference
    # methods at open-unlearning's: 1e-5, 10 epochs, batch 32), the probes at theirs (relearning at 1e-5).
    "gpu": {
        # open-unlearning's system prompt (its Llama-3 models also leave out the template's date lines).
        "data": {
            "data": "tofu",
            "forget_split": "forget10",
            "prompt_style": "chat",
            "system_prompt": "You are a helpful assistant.",
        },
        "finetune": {"learning_rate": 1e-5, "num_train_epochs": 5, "gradient_accumulation_steps": 4},
        "unlearning": {method: {} for method in METHODS},
        "unlearning_common": {},
        "probes": {},
    },
}


def preset_unlearning_config(preset: str, method: str, **overrides):
    """The method's config with the preset's hyperparameters (and `overrides`)."""
    values = {**PRESETS[preset]["unlearning_common"], **PRESETS[preset]["unlearning"][method], **overrides}
    return METHODS[method][0](**values)


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


@dataclass
class BenchArguments:
    preset: str = field(
        default="cpu",
        metadata={
            "help": "Benchmark preset (cpu: 20 TOFU authors, 2 forgotten, a 4-layer model built from scratch; gpu: "
            "TOFU forget10, 200 authors, on a pretrained checkpoint).",
            "choices": sorted(PRESETS),
        },
    )
    tofu_path: str = field(
        default="locuslab/TOFU", metadata={"help": "TOFU: a local folder in the published layout, or the hub id."}
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "gpu preset: the pretrained checkpoint the target and retain models are fine-tuned from (and "
            "cached). The cpu preset builds its model from scratch."
        },
    )
    target_model: str | None = field(
        default=None, metadata={"help": "An already fine-tuned target model (with --retain_model): no fine-tuning."}
    )
    retain_model: str | None = field(
        default=None, metadata={"help": "An already fine-tuned retain model, trained without the forget split."}
    )
    methods: list[str] = field(
        default_factory=list, metadata={"help": f"Methods to run (default: all: {', '.join(METHODS)})."}
    )
    probes: list[str] = field(
        default_factory=lambda: ["all"],
        metadata={
            "help": "Robustness probes run on every model (default: all): paraphrase, quantization, relearning, "
            "extraction."
        },
    )
    output_dir: str | None = field(default=None, metadata={"help": "Run folder (default runs/bench-<task>-<time>)."})


def _prepared(args: BenchArguments, cache_args: CacheArguments, run: Path):
    """The preset's data and its target and retain models: the ones given, or fine-tuned (or reused from the cache)."""
    preset = PRESETS[args.preset]
    if bool(args.target_model) != bool(args.retain_model):
        raise SystemExit("rlunlearn bench: give both --target_model and --retain_model, or neither.")
    if args.model_name_or_path and args.target_model:
        raise SystemExit("rlunlearn bench: give --model_name_or_path or --target_model and --retain_model, not both.")
    if "scratch" in preset and args.model_name_or_path:
        # Its fine-tuning and unlearning rates are tuned for a small model trained from scratch: they would wreck a
        # pretrained one.
        raise SystemExit(
            f"rlunlearn bench: the {args.preset} preset builds its model from scratch; fine-tune a checkpoint with the "
            "gpu preset, or give models you fine-tuned as --target_model and --retain_model."
        )
    if "scratch" not in preset and not (args.model_name_or_path or args.target_model):
        raise SystemExit(
            f"rlunlearn bench: the {args.preset} preset starts from a pretrained model: give --model_name_or_path (a "
            "checkpoint fine-tuned here into the target and retain models), or --target_model and --retain_model."
        )
    data_args = DataArguments(tofu_path=args.tofu_path, **preset["data"])
    bundle = data_args.bundle()
    if args.target_model:
        # Models given by path may change between runs: what is trained from them (DareU's attribution classifier) is
        # kept in the run folder, not cached.
        return data_args, bundle, PreparedModels(run, Path(args.target_model), Path(args.retain_model), reused=True)
    prepared = prepare_models(
        bundle,
        data_args,
        ModelConfig(model_name_or_path=args.model_name_or_path),
        ScratchModelArguments(**preset.get("scratch", {})),
        FinetuneConfig(output_dir=str(run / "finetune"), report_to="none", **preset.get("finetune", {})),
        cache_args.cache_dir,
    )
    return data_args, bundle, prepared


def bench_eval(args: BenchArguments, cache_args: CacheArguments, run: Path) -> dict:
    """Seconds per 100 examples of the whole evaluation suite on the preset's target model."""
    data_args, bundle, prepared = _prepared(args, cache_args, run)
    settings = EvalSettings()
    started = time.time()
    result = evaluate_folder(prepared.target, bundle, data_args.prompt_format(), settings, progress=False)
    seconds = time.time() - started
    examples = sum(len(split) for split in bundle.eval_splits.values())
    timing = {
        "examples": examples,
        "seconds": round(seconds, 1),
        "seconds_per_100_examples": round(100 * seconds / examples, 2),
        "splits": {name: len(split) for name, split in bundle.eval_splits.items()},
    }
    print(
        f"The whole evaluation suite on the {args.preset} preset's target model: {examples} examples "
        f"({', '.join(f'{k} {v}' for k, v in timing['splits'].items())}) in {seconds:.1f}s: "
        f"{timing['seconds_per_100_examples']:.2f}s per 100 examples."
    )
    report = build_report({TARGET: result}, {TARGET: TARGET}, None, {"timing": timing})
    (run / "bench_eval.json").write_text(json.dumps({"timing": timing, "report": report}, indent=2, default=str))
    return timing


BENCH_COLUMNS = [
    "model",
    "forget quality",
    "model utility",
    "MU / target",
    "forget ROUGE-L",
    "privleak",
    "wall time (s)",
    "tokens/s",
    "peak memory (MB)",
]
# The probes' columns beside the forget ROUGE-L they test (forget ROUGE-L itself is in the main table).
BENCH_PROBE_COLUMNS = {label: key for label, key in PROBE_COLUMNS.items() if label != "forget ROUGE-L"}


def bench_unlearn(args: BenchArguments, cache_args: CacheArguments, run: Path) -> dict:
    """Every method (or `--methods`) on the preset: forget quality, model utility and its ratio to the target's, forget
    ROUGE-L, privleak, the unlearning's wall time, training tokens a second and peak memory, and the robustness
    probes (`--probes`), beside the target and retain models."""
    methods = args.methods or list(PRESETS[args.preset]["unlearning"])
    try:
        probes = resolve_probes(args.probes)
    except ValueError as error:
        raise SystemExit(f"rlunlearn bench unlearn: {error}") from None
    probe_settings = ProbeSettings(**PRESETS[args.preset]["probes"])
    unknown = [m for m in methods if m not in PRESETS[args.preset]["unlearning"]]
    if unknown:
        raise SystemExit(
            f"rlunlearn bench unlearn: unknown method(s) {unknown}; the methods are: {', '.join(METHODS)}."
        )
    data_args, bundle, prepared = _prepared(args, cache_args, run)
    fmt, settings = data_args.prompt_format(), EvalSettings()
    results = {}
    for name, path in ((TARGET, prepared.target), (RETAIN, prepared.retain)):
        started = time.time()
        results[name] = evaluate_folder(
            path, bundle, fmt, settings, progress=False, probes=probes, probe_settings=probe_settings
        )
        print(f"{name}: evaluated{' and probed' if probes else ''} in {time.time() - started:.0f}s", flush=True)
    roles = {TARGET: TARGET, RETAIN: RETAIN}
    costs, configs = {}, {}
    for method in methods:
        config = preset_unlearning_config(
            args.preset,
            method,
            output_dir=str(run / method),
            report_to="none",
            save_strategy="no",
            logging_steps=5,
            disable_tqdm=True,
        )
        method_args = None
        if method in ("dareu", "reveal_release"):
            attributor, attributor_metrics = cached_attributor(
                prepared.folder, bundle, data_args, prepared.target, AttributorConfig(output_dir=None)
            )
            print(
                f"{method}: attribution classifier held-out accuracy {attributor_metrics['accuracy']:.3f}", flush=True
            )
            if method == "dareu":
                method_args = RewardArguments(attributor=str(attributor))
            else:  # the forget authors by name only
                method_args = RevealArguments(attributor=str(attributor))
        started = time.time()
        with PeakMemory() as memory:
            trainer = unlearn(method, config, prepared.target, bundle, data_args, ModelConfig(), method_args)
        seconds = time.time() - started
        # Tokens of every forward pass of training (and, for DareU, of every rollout), as the trainers log them.
        tokens = max((entry["num_tokens"] for entry in trainer.state.log_history if "num_tokens" in entry), default=0)
        costs[method] = {
            "wall time (s)": round(seconds, 1),
            "tokens/s": round(tokens / seconds, 1),
            "peak memory (MB)": memory.megabytes,
        }
        configs[method] = config.to_dict()
        started = time.time()
        results[method] = evaluate_model(
            trainer.model,
            trainer.processing_class,
            bundle,
            fmt,
            settings=settings,
            progress=False,
            probes=probes,
            probe_settings=probe_settings,
        )
        print(f"{method}: evaluated{' and probed' if probes else ''} in {time.time() - started:.0f}s", flush=True)
        roles[method] = UNLEARNED
        if method == "dareu":
            plot_rewards(trainer.state.log_history, run / "dareu_reward.png", f"DareU on {bundle.name}")
        if method == "reveal_release":
            plot_reveal_rewards(trainer.rounds, run / "reveal_reward.png", f"Reveal-and-Release on {bundle.name}")
            costs[method]["reveal reward per round"] = [round(r["reveal_reward"], 3) for r in trainer.rounds]
            print(f"reveal_release: reveal reward per round {costs[method]['reveal reward per round']}", flush=True)
        print(
            f"{method}: unlearned in {costs[method]['wall time (s)']}s, peak memory {memory.megabytes} MB", flush=True
        )
    report = build_report(
        results,
        roles,
        results[RETAIN],
        {
            "preset": args.preset,
            "target_model": str(prepared.target),
            "retain_model": str(prepared.retain),
            **report_info(bundle, data_args, settings),
            "costs": costs,
            "configs": configs,
            "probes": {"probes": list(probes), **asdict(probe_settings)},
        },
    )
    target_utility = report["models"][TARGET]["summary"]["model_utility"]
    rows = []
    for name, model in report["models"].items():
        summary = model["summary"]
        rows.append(
            {
                "model": name,
                "forget quality": summary.get("forget_quality"),
                "model utility": summary.get("model_utility"),
                # A target that knows none of the utility splits (utility 0) gives no ratio.
                "MU / target": summary["model_utility"] / target_utility if target_utility else None,
                "forget ROUGE-L": summary.get("forget_rougeL_recall"),
                "privleak": summary.get("privleak"),
                **costs.get(name, {}),
            }
        )
    table = format_table(rows, BENCH_COLUMNS)
    print(f"\n{bundle.name} ({args.preset} preset):\n{table}")
    markdown = markdown_table(rows, BENCH_COLUMNS)
    if probes:
        probe_rows = summary_rows(report, BENCH_PROBE_COLUMNS)
        print(f"\nRobustness probes (forget split):\n{format_table(probe_rows, ['model', *BENCH_PROBE_COLUMNS])}")
        markdown += "\n" + markdown_table(probe_rows, ["model", *BENCH_PROBE_COLUMNS])
    (run / "report.json").write_text(json.dumps(report, indent=2, default=str))
    (run / "table.md").write_text(markdown)
    plot_tradeoff(report, run / "tradeoff.png", f"{bundle.name}: unlearning methods ({args.preset} preset)")
    print(f"Report: {run / 'report.json'}; table: {run / 'table.md'}; plot: {run / 'tradeoff.png'}")
    return report


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


# How each precision loads and trains the model: full fine-tuning in fp32 or bf16 weights, or QLoRA (NF4 weights with
# double quantisation, bf16 compute, LoRA adapters in every linear layer).
MEMORY_MODES = {
    "fp32": {"dtype": "float32"},
    "bf16": {"dtype": "bfloat16"},
    "4bit-lora": {"dtype": "bfloat16", "load_in_4bit": True, "use_bnb_nested_quant": True, "use_peft": True},
}


@dataclass
class MemoryBenchArguments:
    model_preset: str = field(
        default="large",
        metadata={"help": "Size of the random Llama (large: 12 layers, hidden 768).", "choices": sorted(MODEL_PRESETS)},
    )
    vocab_size: int = field(
        default=32000, metadata={"help": "Vocabulary of the model (large + 32000: 110M parameters)."}
    )
    method: str = field(
        default="ga", metadata={"help": "Unlearning method whose steps are measured.", "choices": sorted(METHODS)}
    )
    modes: list[str] = field(
        default_factory=lambda: list(MEMORY_MODES),
        metadata={"help": f"Precisions to compare: {', '.join(MEMORY_MODES)}."},
    )
    steps: int = field(default=3, metadata={"help": "Unlearning steps measured in each precision."})
    batch_size: int = field(default=8, metadata={"help": "Forget examples a step."})
    lora_r: int = field(default=16, metadata={"help": "4bit-lora: LoRA rank (on every linear layer)."})
    activation_checkpointing: bool = field(
        default=True,
        metadata={"help": "Recompute activations in the backward pass, in every precision (the QLoRA recipe)."},
    )
    output_dir: str | None = field(default=None, metadata={"help": "Run folder (default runs/bench-memory-<time>)."})


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


def bench_memory(args: MemoryBenchArguments, cache_args: CacheArguments, run: Path) -> list[dict]:
    """Memory of unlearning steps on the same random model in fp32 and bf16 (full fine-tuning) and in 4-bit + LoRA
    (QLoRA): the model's footprint, and the peak memory of the steps (allocated GPU memory, or the process's resident
    set on a CPU, where "peak above start" leaves out what the interpreter and libraries hold before the model loads).
    """
    import multiprocessing
    import shutil

    from transformers import LlamaConfig, LlamaForCausalLM

    from .data import generate_authors
    from .models import train_tokenizer

    unknown = [mode for mode in args.modes if mode not in MEMORY_MODES]
    if unknown:
        raise SystemExit(f"rlunlearn bench memory: unknown --modes {unknown}; the modes are {list(MEMORY_MODES)}.")
    tokenizer = train_tokenizer(generate_authors(20, 2).corpus(), 4096)
    size = MODEL_PRESETS[args.model_preset]
    config = LlamaConfig(
        vocab_size=max(args.vocab_size, len(tokenizer)),
        num_key_value_heads=size["num_attention_heads"],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        **size,
    )
    model_dir = run / "model"
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    parameters = model.num_parameters()
    model.to(torch.bfloat16).save_pretrained(model_dir)  # as checkpoints are published
    del model
    tokenizer.save_pretrained(model_dir)

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
    table = format_table(rows, MEMORY_COLUMNS)
    print(f"\n{args.method} steps on a random {args.model_preset} Llama, batch {args.batch_size} ({where}):\n{table}")
    (run / "memory.json").write_text(json.dumps({"arguments": vars(args), "where": where, "rows": rows}, indent=2))
    (run / "memory.md").write_text(markdown_table(rows, MEMORY_COLUMNS))
    print(f"Results: {run / 'memory.json'}; table: {run / 'memory.md'}")
    return rows


# Each task: the function and its arguments.
TASKS = {
    "unlearn": (bench_unlearn, BenchArguments),
    "eval": (bench_eval, BenchArguments),
    "memory": (bench_memory, MemoryBenchArguments),
}
