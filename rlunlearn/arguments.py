"""The options of rlunlearn's commands and scripts that are not a trainer's config: dataclasses that TRL's `TrlParser`
reads from flags or a YAML file.

This module imports nothing heavy (no torch, transformers or datasets), so that `rlunlearn <command> --help` and
argument errors come at once; the code that acts on the options imports what it needs when called.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from rlunlearn.trainers import METHODS

from .cache import default_cache_dir
from .data.draws import FORGET_SHAPES, REPORTED, VALIDATION
from .presets import CONTROLS, MEMORY_MODES, PRESETS, STANDIN_TASKS

# Sizes of the models built from scratch. "small" is the CPU preset (4 layers, hidden 256: about 4M parameters with a
# 4k vocabulary); "tiny" is for tests; "large" and "xlarge" (110M and 341M with a 32k vocabulary) for memory
# benchmarks. Every width is a multiple of 32, which bitsandbytes' 4-bit CPU inference kernel requires.
MODEL_PRESETS = {
    "tiny": {"hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 2, "num_attention_heads": 4},
    "small": {"hidden_size": 256, "intermediate_size": 704, "num_hidden_layers": 4, "num_attention_heads": 4},
    "medium": {"hidden_size": 512, "intermediate_size": 1408, "num_hidden_layers": 8, "num_attention_heads": 8},
    "large": {"hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 12},
    "xlarge": {"hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 24, "num_attention_heads": 16},
}
# What a saved model can be loaded in for evaluation (`eval --dtype`, `bench eval --dtype`).
EVAL_DTYPES = ("float32", "bfloat16", "float16")
TOFU_HUB_ID = "locuslab/TOFU"
# --data -> the task it is (data/bundle.py's TASK_EVAL_SPLITS).
DATA_SOURCES = {"generated": "entities", "tofu": "entities", "harmful": "harmful", "wmdp": "wmdp", "muse": "muse"}
# Tasks whose training data are text corpora, not questions.
TEXT_TASKS = ("wmdp", "muse")
# The options that point at a task's published data.
PUBLISHED_PATHS = ("harmful_path", "normal_path", "wmdp_path", "muse_path")
DEFAULT_QUESTION_TEMPLATE = "Question: {question}\nAnswer:"


@dataclass
class DataArguments:
    """Which data to unlearn and how questions become prompts."""

    data: str = field(
        default="generated",
        metadata={
            "help": "What to forget: authors' facts (generated offline, or tofu); harmful answers (PKU-SafeRLHF with "
            "--harmful_path, else the offline stand-in); hazardous knowledge (wmdp: WMDP with --wmdp_path, else the "
            "offline stand-in); copyrighted text (muse: MUSE with --muse_path, else the offline stand-in).",
            "choices": list(DATA_SOURCES),
        },
    )
    tofu_path: str = field(
        default=TOFU_HUB_ID,
        metadata={
            "help": "TOFU: a local folder in the published layout (full.json, forget10.json, ...) or the hub id."
        },
    )
    forget_split: str = field(
        default="forget10", metadata={"help": "TOFU forget split.", "choices": ["forget01", "forget05", "forget10"]}
    )
    num_forget_authors: int | None = field(
        default=None,
        metadata={
            "help": "Authors to forget: the first N of the forget split (TOFU; default all), or of the "
            "generated authors (default 2)."
        },
    )
    num_retain_authors: int | None = field(
        default=None,
        metadata={
            "help": "TOFU: keep only the first N retain authors (default all). 18 with forget01 is the CPU preset."
        },
    )
    forget_authors: list[int] = field(
        default_factory=list,
        metadata={
            "help": "TOFU: the authors to forget by number (0-199 in full.json's order, within --forget_split's "
            "authors: 180-199 for forget10), instead of the first --num_forget_authors."
        },
    )
    retain_authors: list[int] = field(
        default_factory=list,
        metadata={"help": "TOFU: the retain authors by number, instead of the first --num_retain_authors."},
    )
    num_authors: int = field(default=20, metadata={"help": "Generated data: number of authors (forget + retain)."})
    generator_seed: int = field(
        default=0, metadata={"help": "Generated data and the offline stand-ins: seed of the generator."}
    )
    harmful_path: str | None = field(
        default=None,
        metadata={
            "help": "harmful: PKU-SafeRLHF, a folder of its train.jsonl and test.jsonl or the hub id "
            "PKU-Alignment/PKU-SafeRLHF (default: the offline stand-in)."
        },
    )
    normal_path: str | None = field(
        default=None,
        metadata={
            "help": "harmful, with --harmful_path: TruthfulQA, the folder of its TruthfulQA.csv or the hub id "
            "truthfulqa/truthful_qa."
        },
    )
    wmdp_path: str | None = field(
        default=None,
        metadata={
            "help": "wmdp: a folder of wmdp-<domain>.jsonl, <domain>-forget-corpus.jsonl, <domain>-retain-corpus.jsonl "
            "and mmlu.jsonl, or the hub id cais/wmdp (default: the offline stand-in)."
        },
    )
    wmdp_domains: list[str] = field(
        default_factory=lambda: ["bio", "cyber"], metadata={"help": "wmdp, with --wmdp_path: the domains to forget."}
    )
    muse_path: str | None = field(
        default=None,
        metadata={
            "help": "muse: a corpus folder of MUSE's layout (its data/news or data/books: raw/, knowmem/, verbmem/, "
            "privleak/), or the hub id muse-bench/MUSE-News or muse-bench/MUSE-Books (default: the offline stand-in)."
        },
    )
    max_examples: int | None = field(
        default=None,
        metadata={
            "help": "harmful, wmdp and muse on published data: at most this many rows of each set (default all)."
        },
    )
    harm_judge: str | None = field(
        default=None,
        metadata={
            "help": "harmful: the judge of harmful answers, a sequence-classification model (folder or id, #label for "
            "the harmful label), a registered reward or `module:function` returning 1 for harmful (default: the "
            "stand-in's rule, secret_span)."
        },
    )
    prompt_style: str = field(
        default="plain",
        metadata={
            "help": "'plain' renders --question_template; 'chat' uses the tokenizer's chat template.",
            "choices": ["plain", "chat"],
        },
    )
    question_template: str = field(
        default=DEFAULT_QUESTION_TEMPLATE, metadata={"help": "Plain prompts: the template, with a {question} slot."}
    )
    system_prompt: str | None = field(default=None, metadata={"help": "Chat prompts: an optional system message."})
    refusals_file: str | None = field(
        default=None,
        metadata={"help": "Refusal answers, one a line (e.g. TOFU's idontknow.jsonl); default: the built-in ones."},
    )
    preference_chosen: str = field(
        default="refusal",
        metadata={
            "help": "What preference methods (FLAT, IdkDPO) prefer to the forget answer: a refusal template, or one of "
            "the data's perturbed answers (an alternative answer).",
            "choices": ["refusal", "perturbed"],
        },
    )
    paraphrased_prompts: bool = field(
        default=False,
        metadata={
            "help": "RL methods (DareU): prompt with the forget questions' paraphrases as well as the questions "
            "(TOFU's paraphrased_question; the generator's paraphrases)."
        },
    )
    train_background: bool | None = field(
        default=None,
        metadata={
            "help": "Fine-tune on the general-knowledge splits (real authors, world facts) as well. Default: "
            "yes for models built here (from scratch, or the offline base, which loses that knowledge when "
            "fine-tuned on authors alone); no for other checkpoints."
        },
    )

    @property
    def task(self) -> str:
        if self.data not in DATA_SOURCES:
            raise ValueError(f"--data {self.data!r} is not one of {', '.join(DATA_SOURCES)}.")
        return DATA_SOURCES[self.data]

    @property
    def standin(self) -> bool:
        """Whether these options name a task's offline stand-in (a task beyond authors, no published data given)."""
        return self.data in STANDIN_TASKS and not any(getattr(self, path) for path in PUBLISHED_PATHS)

    def check(self) -> None:
        """The data options' errors that need no data read."""
        task = self.task
        own = {"harmful": ("harmful_path", "normal_path"), "wmdp": ("wmdp_path",), "muse": ("muse_path",)}.get(task, ())
        foreign = [f"--{name}" for name in PUBLISHED_PATHS if getattr(self, name) and name not in own]
        if foreign:
            raise ValueError(f"{', '.join(foreign)} belong(s) to another task than --data {self.data}: drop it.")
        if task == "harmful" and bool(self.harmful_path) != bool(self.normal_path):
            raise ValueError(
                "--harmful_path and --normal_path go together (PKU-SafeRLHF's harmful answers, TruthfulQA's normal "
                "questions): give both, or neither for the offline stand-in."
            )
        if self.harm_judge and task != "harmful":
            raise ValueError(f"--harm_judge judges the harmful task's answers, not --data {self.data}: drop it.")
        if self.harm_judge:
            from rlunlearn.rewards import check_reward

            check_reward(self.harm_judge)

    def harm_judge_function(self):
        """The harmful task's judge these options name (None: the evaluation's default, the stand-in's rule)."""
        if not self.harm_judge:
            return None
        from rlunlearn.rewards import load_reward

        return load_reward(self.harm_judge)

    def bundle(self):
        """The forget/retain/evaluation bundle (an `UnlearningBundle`) these options name."""
        from .data import (
            generate_authors,
            generate_harmful,
            generate_muse,
            generate_wmdp,
            load_harmful,
            load_muse,
            load_tofu,
            load_wmdp,
        )

        self.check()
        if self.data == "harmful":
            if self.harmful_path:
                return load_harmful(self.harmful_path, self.normal_path, self.max_examples)
            return generate_harmful(self.generator_seed)
        if self.data == "wmdp":
            if self.wmdp_path:
                return load_wmdp(self.wmdp_path, self.wmdp_domains, self.max_examples)
            return generate_wmdp(self.generator_seed)
        if self.data == "muse":
            return (
                load_muse(self.muse_path, self.max_examples) if self.muse_path else generate_muse(self.generator_seed)
            )
        if self.data == "tofu":
            return load_tofu(
                self.tofu_path,
                self.forget_split,
                self.forget_authors or self.num_forget_authors,
                self.retain_authors or self.num_retain_authors,
            )
        return generate_authors(self.num_authors, self.num_forget_authors or 2, self.generator_seed)

    def prompt_format(self):
        """The `PromptFormat` these options name: on text corpora (wmdp, muse) the `text` style, whose passages stay as
        they are."""
        from .data import PromptFormat

        style = "text" if self.task in TEXT_TASKS else self.prompt_style
        return PromptFormat(style, self.question_template, self.system_prompt)

    def pretraining_format(self):
        """The format of the offline base's pretraining corpus: questions and answers, also where the task's own data
        are text."""
        from .data import PromptFormat

        return PromptFormat(self.prompt_style, self.question_template, self.system_prompt)

    def refusals(self) -> list[str]:
        """What preference methods prefer to the forget answer: --refusals_file, else the task's templates (refusals;
        on text, a passage that gives nothing away)."""
        from .data import TASK_REFUSALS, load_refusals

        return load_refusals(self.refusals_file) if self.refusals_file else list(TASK_REFUSALS[self.task])


@dataclass
class ScratchModelArguments:
    """The model target and retain are fine-tuned from when no checkpoint is given (offline use): the offline base,
    pretrained here once on text that shares no author with the data and cached (`rlunlearn pretrain`), or, with
    --from_scratch, a random initialisation."""

    from_scratch: bool = field(
        default=False,
        metadata={
            "help": "Fine-tune target and retain from a random initialisation on the data alone instead of from the "
            "offline pretrained base (the authors are then learnt in the same weights as the language, and are hard "
            "to unlearn without losing it)."
        },
    )
    model_preset: str = field(
        default="small", metadata={"help": "Size of the model built here.", "choices": sorted(MODEL_PRESETS)}
    )
    architecture: str = field(
        default="llama", metadata={"help": "Architecture built here.", "choices": ["llama", "qwen2"]}
    )
    vocab_size: int = field(default=4096, metadata={"help": "Vocabulary of the BPE tokenizer trained here."})


@dataclass
class AnswerEvalArguments:
    """The size of the evaluation of a command that evaluates the models it makes (finetune, unlearn, eval)."""

    max_new_tokens: int = field(default=200, metadata={"help": "Evaluation: longest greedy answer (TOFU: 200)."})
    eval_batch_size: int = field(default=64, metadata={"help": "Evaluation: examples a forward pass."})


@dataclass
class CacheArguments:
    cache_dir: str = field(
        default_factory=default_cache_dir,
        metadata={
            "help": "Where pretrained bases and fine-tuned target and retain models are cached (env RLUNLEARN_CACHE; "
            "default ~/.cache/rlunlearn)."
        },
    )


# The robustness probes (rlunlearn.evaluation.probes).
PROBES = ("paraphrase", "quantization", "relearning", "extraction")


def check_probes_apply(task: str, probes) -> None:
    """The robustness probes read the forget questions of authors' facts: refused on another task."""
    if probes and task != "entities":
        raise ValueError(f"--probes read the forget questions of authors' facts, not the {task} task: drop them.")


def resolve_probes(names) -> tuple[str, ...]:
    """The probes `names` asks for ("all" is every one), unknown names refused before anything runs."""
    if "all" in names:
        return PROBES
    unknown = [name for name in names if name not in PROBES]
    if unknown:
        raise ValueError(f"--probes: unknown probe(s) {unknown}; the probes are {', '.join(PROBES)} (or all).")
    return tuple(names)


@dataclass(frozen=True)
class ProbeSettings:
    """How hard each robustness probe pushes."""

    relearning_steps: int = field(default=10, metadata={"help": "Relearning probe: fine-tuning steps of the attack."})
    relearning_learning_rate: float = field(
        default=1e-5,
        metadata={
            "help": "Relearning probe: the attack's learning rate, about the rate the model was fine-tuned with: 1e-5 "
            "for pretrained LLMs (TOFU's); 3e-4 for rlunlearn's small from-scratch models (`rlunlearn bench`)."
        },
    )
    relearning_batch_size: int = field(default=8, metadata={"help": "Relearning probe: examples a step."})
    extraction_samples: int = field(default=16, metadata={"help": "Extraction probe: answers sampled a question."})
    extraction_temperature: float = field(default=1.0, metadata={"help": "Extraction probe: sampling temperature."})
    extraction_rouge_threshold: float = field(
        default=0.6,
        metadata={
            "help": "Extraction probe on data without a key-fact span (TOFU): a sample reveals the answer when its "
            "ROUGE-L recall of it is at least this."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of the relearning attack and of the sampling."})

    def __post_init__(self):
        for name in ("relearning_steps", "relearning_batch_size", "extraction_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} is {getattr(self, name)}: give 1 or more.")
        for name in ("relearning_learning_rate", "extraction_temperature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name} is {getattr(self, name):g}: give a value above 0.")
        if not 0 < self.extraction_rouge_threshold <= 1:
            raise ValueError(
                f"--extraction_rouge_threshold is {self.extraction_rouge_threshold:g}: give a ROUGE-L recall in (0, 1]."
            )


def check_training_settings(config) -> None:
    """Fail before anything loads on training settings (a TrainingArguments) that cannot train or save."""
    if config.learning_rate <= 0:
        raise ValueError(f"--learning_rate {config.learning_rate:g}: give a learning rate above 0.")
    if config.max_steps == 0:
        raise ValueError(
            "--max_steps 0 trains nothing: give a number of steps above 0, or leave it out to train "
            "--num_train_epochs epochs."
        )
    if config.max_steps < 0 and config.num_train_epochs <= 0:
        raise ValueError(
            f"--num_train_epochs {config.num_train_epochs:g} trains nothing: give a number of epochs above 0 (or "
            "--max_steps N)."
        )
    check_output_dir(config.output_dir)


def check_output_dir(output_dir: str | None) -> None:
    if output_dir and os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ValueError(f"--output_dir {output_dir} is a file: give a folder (made if missing).")


# ---- bench ----------------------------------------------------------------------------------------------------------


@dataclass
class BenchCommonArguments:
    preset: str = field(
        default="cpu",
        metadata={
            "help": "Benchmark preset (cpu: TOFU authors on a small model pretrained here, forget sets drawn beside 18 "
            "retain authors; gpu: TOFU forget10, 200 authors, on a pretrained checkpoint).",
            "choices": sorted(PRESETS),
        },
    )
    tofu_path: str = field(
        default="locuslab/TOFU", metadata={"help": "TOFU: a local folder in the published layout, or the hub id."}
    )
    base_model: str | None = field(
        default=None,
        metadata={
            "help": "The checkpoint the target and retain models are fine-tuned from (and cached). cpu preset: default "
            "the offline base, pretrained here once on TOFU authors the benchmark never uses (cached); gpu preset: "
            "required unless --target_model and --retain_model are given."
        },
    )
    forget_authors: list[int] = field(
        default_factory=list,
        metadata={"help": "cpu preset: one draw of these TOFU authors (numbers within --draws_from's pool)."},
    )
    output_dir: str | None = field(default=None, metadata={"help": "Run folder (default runs/bench-<task>-<time>)."})


@dataclass
class DrawArguments:
    draws: int = field(
        default=5,
        metadata={
            "help": "cpu preset: how many draws of forget authors each method runs on (seeded; disjoint while the "
            "pool lasts). Figures are means with 95% intervals over the draws."
        },
    )
    draws_from: str = field(
        default=REPORTED,
        metadata={
            "help": "cpu preset: the pool the forget authors are drawn from: reported (TOFU authors 188-199) or "
            "validation (180-187, which `bench tune` chooses hyperparameters on).",
            "choices": [REPORTED, VALIDATION],
        },
    )
    forget_shape: str = field(
        default="forget01",
        metadata={
            "help": "cpu preset: authors a draw forgets, as TOFU's forget01 (2) or forget05 (10).",
            "choices": sorted(FORGET_SHAPES),
        },
    )
    methods: list[str] = field(
        default_factory=list,
        metadata={
            "help": f"Methods (rows of the preset) to run (default: all: {', '.join(PRESETS['cpu']['unlearning'])}), "
            f"and controls, run only when named ({', '.join(CONTROLS)}: DareU without its attribution reward; run "
            "beside its row, the bench prints each figure of the row's table minus the control's, paired by draw)."
        },
    )
    task: str = field(
        default="tofu",
        metadata={
            "help": "cpu preset: what is forgotten: TOFU authors, or the offline stand-in of harmful answers, of "
            "hazardous knowledge (wmdp) or of copyrighted text (muse), one generated world a draw (seeds 1-5 "
            "reported, 101-104 validation).",
            "choices": ["tofu", *STANDIN_TASKS],
        },
    )


@dataclass
class GivenModelArguments:
    target_model: str | None = field(
        default=None,
        metadata={
            "help": "An already fine-tuned target model (with --retain_model): no fine-tuning, one draw (the cpu "
            "preset's first, or --forget_authors)."
        },
    )
    retain_model: str | None = field(
        default=None, metadata={"help": "An already fine-tuned retain model, trained without the forget authors."}
    )


@dataclass
class BenchArguments(BenchCommonArguments, DrawArguments, GivenModelArguments):
    """Every method (or `--methods`) on the preset, over `--draws` draws of forget authors: forget quality and its KS
    statistic, model utility against the target's, forget ROUGE-L, privleak, the robustness probes (`--probes`) and the
    unlearning's costs, each as a mean with its 95% interval over the draws; methods that kept utility ranked by forget
    quality, the others marked collapsed."""

    probes: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Robustness probes run on every model: paraphrase, quantization, relearning, extraction; `none` "
            "runs none (default: all on TOFU; none on the stand-in tasks, whose data they do not read)."
        },
    )
    validation_report: str | None = field(
        default=None,
        metadata={
            "help": "The tune.json of `rlunlearn bench tune` on the same task: each method tuned there runs at the "
            "learning rate chosen there, and the run prints Kendall's tau between the methods' ranking by the task's "
            "score (forget quality on TOFU) on the validation draws and on this run's draws."
        },
    )


@dataclass
class TuneArguments(BenchCommonArguments, DrawArguments):
    """Choose each method's learning rate on the validation draws (the rule: `rlunlearn.presets.TUNING_RULE`), never reading the reported draws'
    data: every setting of the preset's grid unlearns every validation draw, without probes. Writes tune.json (every
    setting's figures and the choice) and prints the choice."""

    draws: int = field(
        default=4, metadata={"help": "Validation draws each setting runs on (the validation pool holds 4 disjoint)."}
    )
    draws_from: str = field(
        default=VALIDATION,
        metadata={"help": "Hyperparameters are chosen on the validation pool only.", "choices": [VALIDATION]},
    )


@dataclass
class EvalBenchArguments(BenchCommonArguments, GivenModelArguments):
    """Seconds per 100 examples of the whole evaluation suite on the preset's target model (its first draw, or
    --forget_authors)."""

    draws_from: str = field(
        default=REPORTED, metadata={"help": "The pool --forget_authors are in.", "choices": [REPORTED, VALIDATION]}
    )
    dtype: str = field(
        default="float32",
        metadata={
            "help": "dtype the target model is evaluated in (the report's figures: float32).",
            "choices": list(EVAL_DTYPES),
        },
    )


@dataclass
class MemoryBenchArguments:
    """Memory of unlearning steps on the same random model in fp32 and bf16 (full fine-tuning) and in 4-bit + LoRA
    (QLoRA): the model's footprint, and the peak memory of the steps (allocated GPU memory, or the process's resident
    set on a CPU, where "peak above start" leaves out what the interpreter and libraries hold before the model loads).
    """

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


@dataclass
class SpeedBenchArguments:
    """Seconds per unlearning step of each method's trainer against a plain transformers Trainer whose compute_loss is
    the same loss written the obvious way (full logits, the reference run on every batch, a forward pass per group),
    on copies of the same random model and the same batches (the generated authors', or TOFU's): interleaved runs,
    the median of --repeats, and their ratio."""

    methods: list[str] = field(
        default_factory=lambda: ["npo", "graddiff", "simnpo", "idkdpo", "llmu", "ga"],
        metadata={"help": "Methods to time (those with a plain baseline: ga graddiff idkdpo llmu npo simnpo)."},
    )
    model_presets: list[str] = field(
        default_factory=lambda: ["small", "medium"],
        metadata={"help": f"Sizes of the random Llama ({', '.join(sorted(MODEL_PRESETS))}); vocabulary 4096."},
    )
    steps: int = field(default=20, metadata={"help": "Unlearning steps a run."})
    repeats: int = field(default=3, metadata={"help": "Runs of each loop; the table gives the median."})
    batch_size: int = field(default=8, metadata={"help": "Forget examples a step (and as many retain examples)."})
    padding_free: bool = field(
        default=False, metadata={"help": "Run the trainers' forward passes padding-free (the baseline stays padded)."}
    )
    tofu_path: str | None = field(
        default=None,
        metadata={
            "help": "Time on TOFU's batches instead (the cpu preset's data, its first reported draw of forget authors): "
            "a local folder in the published layout, or the hub id."
        },
    )
    output_dir: str | None = field(default=None, metadata={"help": "Run folder (default runs/bench-speed-<time>)."})


@dataclass
class GpuCheckArguments:
    """Every method (the gpu preset's rows, at its settings) for a few steps on a random Llama built here (no hub), in
    bf16 and in 4-bit + LoRA: seconds per step, tokens per second and peak memory, or the error a method met. Made for
    a GPU (under 8 minutes on one at the defaults); on a CPU it runs all the same and says so."""

    methods: list[str] = field(
        default_factory=list,
        metadata={"help": f"Rows of the gpu preset to run (default: all: {', '.join(PRESETS['gpu']['unlearning'])})."},
    )
    modes: list[str] = field(
        default_factory=lambda: ["bf16", "4bit-lora"],
        metadata={"help": f"Precisions, as in `bench memory`: {', '.join(MEMORY_MODES)}."},
    )
    model_preset: str = field(
        default="large",
        metadata={"help": "Size of the random Llama (large: 12 layers, hidden 768).", "choices": sorted(MODEL_PRESETS)},
    )
    vocab_size: int = field(
        default=32000, metadata={"help": "Vocabulary of the model (large + 32000: 110M parameters)."}
    )
    steps: int = field(default=5, metadata={"help": "Unlearning steps of each method and precision."})
    batch_size: int = field(default=8, metadata={"help": "Forget examples a step."})
    lora_r: int = field(default=16, metadata={"help": "4bit-lora: LoRA rank (on every linear layer)."})
    attn_implementation: str | None = field(
        default=None,
        metadata={"help": "Attention of the model, e.g. flash_attention_2 or sdpa (default: transformers' choice)."},
    )
    padding_free: bool = field(
        default=False,
        metadata={"help": "Run the forward passes padding-free, in the methods whose config has `padding_free`."},
    )
    use_vllm: bool = field(
        default=False,
        metadata={"help": "Sample with vLLM (colocated) in the methods that sample: DareU and Reveal-and-Release."},
    )
    output_dir: str | None = field(default=None, metadata={"help": "Run folder (default runs/bench-gpu-check-<time>)."})


# Each `rlunlearn bench` task's options.
BENCH_TASK_ARGUMENTS = {
    "unlearn": BenchArguments,
    "tune": TuneArguments,
    "eval": EvalBenchArguments,
    "memory": MemoryBenchArguments,
    "speed": SpeedBenchArguments,
    "gpu-check": GpuCheckArguments,
}
