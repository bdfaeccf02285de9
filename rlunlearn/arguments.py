"""The options of rlunlearn's commands and scripts that are not a trainer's config: dataclasses that TRL's `TrlParser`
reads from flags or a YAML file.

This module imports nothing heavy (no torch, transformers or datasets), so that `rlunlearn <command> --help` and
argument errors come at once; the code that acts on the options imports what it needs when called.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .cache import default_cache_dir

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
TOFU_HUB_ID = "locuslab/TOFU"
DEFAULT_QUESTION_TEMPLATE = "Question: {question}\nAnswer:"


@dataclass
class DataArguments:
    """Which data to unlearn and how questions become prompts."""

    data: str = field(default="generated", metadata={"help": "Data source.", "choices": ["generated", "tofu"]})
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
    generator_seed: int = field(default=0, metadata={"help": "Generated data: seed of the generator."})
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

    def bundle(self):
        """The forget/retain/evaluation bundle (an `UnlearningBundle`) these options name."""
        from .data import generate_authors, load_tofu

        if self.data == "tofu":
            return load_tofu(
                self.tofu_path,
                self.forget_split,
                self.forget_authors or self.num_forget_authors,
                self.retain_authors or self.num_retain_authors,
            )
        if self.data == "generated":
            return generate_authors(self.num_authors, self.num_forget_authors or 2, self.generator_seed)
        raise ValueError(f"--data {self.data!r} is not one of 'generated', 'tofu'.")

    def prompt_format(self):
        """The `PromptFormat` these options name."""
        from .data import PromptFormat

        return PromptFormat(self.prompt_style, self.question_template, self.system_prompt)

    def refusals(self) -> list[str]:
        from .data import REFUSALS, load_refusals

        return load_refusals(self.refusals_file) if self.refusals_file else list(REFUSALS)


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
