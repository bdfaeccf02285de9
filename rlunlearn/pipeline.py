"""The end-to-end pipeline: data -> target and retain models (cached) -> unlearning -> evaluation -> report."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from datasets import concatenate_datasets
from trl import ModelConfig, get_peft_config

from rlunlearn.trainers import METHODS, UnlearningConfig, UnlearningTrainer
from rlunlearn.trainers.utils import sharding_engine

from .attribution import RewardArguments, attributor_for_run, build_rewards
from .data import (
    DEFAULT_QUESTION_TEMPLATE,
    REFUSALS,
    TOFU_HUB_ID,
    PromptFormat,
    UnlearningBundle,
    generate_authors,
    load_refusals,
    load_tofu,
    preference_dataset,
    prompt_dataset,
    sft_dataset,
)
from .finetune import FinetuneConfig, finetune, training_data
from .models import MODEL_PRESETS, build_model, load_model, load_tokenizer, train_tokenizer, whole_models
from .reveal import RevealArguments, reveal_release_inputs

logger = logging.getLogger(__name__)

# Bump when a change to the fine-tuning code makes cached models stale.
CACHE_VERSION = 3


def default_cache_dir() -> str:
    return os.environ.get("RLUNLEARN_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "rlunlearn"))


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
            "yes for models built from scratch, which cannot know them otherwise; no for pretrained checkpoints."
        },
    )

    def bundle(self) -> UnlearningBundle:
        if self.data == "tofu":
            return load_tofu(self.tofu_path, self.forget_split, self.num_forget_authors, self.num_retain_authors)
        if self.data == "generated":
            return generate_authors(self.num_authors, self.num_forget_authors or 2, self.generator_seed)
        raise ValueError(f"--data {self.data!r} is not one of 'generated', 'tofu'.")

    def prompt_format(self) -> PromptFormat:
        return PromptFormat(self.prompt_style, self.question_template, self.system_prompt)

    def refusals(self) -> list[str]:
        return load_refusals(self.refusals_file) if self.refusals_file else list(REFUSALS)


@dataclass
class ScratchModelArguments:
    """The model built from scratch when no --model_name_or_path is given (offline use)."""

    model_preset: str = field(
        default="small", metadata={"help": "Size of the model built from scratch.", "choices": sorted(MODEL_PRESETS)}
    )
    architecture: str = field(
        default="llama", metadata={"help": "Architecture built from scratch.", "choices": ["llama", "qwen2"]}
    )
    vocab_size: int = field(default=4096, metadata={"help": "Vocabulary of the BPE tokenizer trained on the data."})


@dataclass
class CacheArguments:
    cache_dir: str = field(
        default_factory=default_cache_dir,
        metadata={
            "help": "Where fine-tuned target and retain models are cached (env RLUNLEARN_CACHE; default "
            "~/.cache/rlunlearn)."
        },
    )


@dataclass
class PreparedModels:
    """Folders of the fine-tuned target and retain models (each with its tokenizer), and the folder that holds what is
    trained from them (the cache entry, or a run folder)."""

    folder: Path
    target: Path
    retain: Path
    reused: bool


def _hash(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def finetune_models(
    bundle: UnlearningBundle,
    data_args: DataArguments,
    model_args: ModelConfig,
    scratch_args: ScratchModelArguments,
    finetune_config: FinetuneConfig,
    folder: str | Path,
    which: tuple[str, ...] = ("target", "retain"),
) -> dict[str, float]:
    """Fine-tune the target (every author) and/or retain (retain authors only) model into `folder/<which>`.

    From a checkpoint, both start from it. From scratch, a tokenizer is trained on the bundle and both models start
    from the same random initialisation (the same seed), and learn the general knowledge (real authors, world facts)
    along with the authors, so that they differ only in the authors they saw. (Learning that knowledge first, in a
    separate stage, made the authors markedly harder to learn afterwards.) Returns the seconds each model took.
    """
    from_scratch = not model_args.model_name_or_path
    with_background = from_scratch if data_args.train_background is None else data_args.train_background
    fmt = data_args.prompt_format()
    if from_scratch:
        tokenizer = train_tokenizer(bundle.corpus(), scratch_args.vocab_size)
    else:
        tokenizer = load_tokenizer(model_args.model_name_or_path, model_args.model_revision)
    seconds = {}
    for name in which:
        started = time.time()
        if from_scratch:
            model = build_model(
                tokenizer, scratch_args.model_preset, scratch_args.architecture, seed=finetune_config.seed
            )
        else:
            model = load_model(model_args)
        config = dataclasses.replace(finetune_config, output_dir=str(Path(folder) / name))
        logger.info("Fine-tuning the %s model (%s)", name, "all authors" if name == "target" else "retain authors only")
        finetune(
            model, tokenizer, training_data(bundle, name, fmt, with_background), config, get_peft_config(model_args)
        )
        seconds[name] = round(time.time() - started, 1)
    return seconds


def prepare_models(
    bundle: UnlearningBundle,
    data_args: DataArguments,
    model_args: ModelConfig,
    scratch_args: ScratchModelArguments,
    finetune_config: FinetuneConfig,
    cache_dir: str | Path,
) -> PreparedModels:
    """Fine-tune the target and retain models, or reuse them from the cache.

    The cache key is a hash of the data, the prompt format, the base model (checkpoint or scratch preset) and every
    fine-tuning setting that changes the weights. Models are written to a temporary folder that is renamed once both
    are done, so an interrupted run never leaves a half-written entry.
    """
    from_scratch = not model_args.model_name_or_path
    key_parts = {
        "version": CACHE_VERSION,
        "bundle": bundle.fingerprint(),
        "format": dataclasses.asdict(data_args.prompt_format()),
        "base": dataclasses.asdict(scratch_args) if from_scratch else model_args.model_name_or_path,
        "dtype": model_args.dtype,
        "lora": dataclasses.asdict(get_peft_config(model_args)) if model_args.use_peft else None,
        "finetune": finetune_config.cache_key(),
        "background": from_scratch if data_args.train_background is None else data_args.train_background,
    }
    folder = Path(cache_dir).expanduser() / "models" / f"{bundle.name}-{_hash(key_parts)[:16]}"
    if (folder / "complete.json").is_file():
        logger.info("Reusing the cached target and retain models in %s", folder)
        return PreparedModels(folder, folder / "target", folder / "retain", reused=True)

    staging = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    seconds = finetune_models(bundle, data_args, model_args, scratch_args, finetune_config, staging)
    (staging / "complete.json").write_text(json.dumps({"key": key_parts, "seconds": seconds}, indent=2, default=str))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(staging, folder)
    return PreparedModels(folder, folder / "target", folder / "retain", reused=False)


def unlearning_datasets(method: str, config: UnlearningConfig, bundle: UnlearningBundle, data_args: DataArguments):
    """The forget set in the form the method's trainer reads, and the retain set where it has a retain term."""
    trainer_class = METHODS[method][1]
    fmt = data_args.prompt_format()
    if method == "dareu":
        # RL: the forget questions as prompts; `author` and `answer` ride along for reward functions that read them.
        retain = sft_dataset(bundle.retain, fmt) if config.retain_weight > 0 else None
        prompts = prompt_dataset(bundle.forget, fmt)
        if data_args.paraphrased_prompts:
            rows = bundle.eval_splits.get("forget")
            if rows is None or "paraphrased_question" not in rows.column_names:
                raise ValueError("--paraphrased_prompts needs paraphrased forget questions; this data has none.")
            paraphrases = prompt_dataset(rows, fmt, prompts.column_names, question_column="paraphrased_question")
            prompts = concatenate_datasets([prompts, paraphrases])
        return prompts, retain
    if method == "reveal_release":
        # The forget set is what the model reveals (and the seed data of RevealArguments, if any).
        return None, sft_dataset(bundle.retain, fmt) if trainer_class.needs_retain(config) else None
    if set(trainer_class.forget_groups.values()) == {"completion"}:
        forget = sft_dataset(bundle.forget, fmt)
    elif data_args.preference_chosen == "perturbed":
        # The evaluation's forget split holds the forget set's rows, in order, with their perturbed answers.
        rows = bundle.eval_splits.get("forget")
        if rows is None or "perturbed_answer" not in rows.column_names:
            raise ValueError(
                "--preference_chosen perturbed needs perturbed answers of the forget set; this data has none."
            )
        forget = preference_dataset(rows, fmt, alternative_column="perturbed_answer", seed=config.seed)
    else:
        forget = preference_dataset(bundle.forget, fmt, data_args.refusals(), seed=config.seed)
    retain = sft_dataset(bundle.retain, fmt) if trainer_class.needs_retain(config) else None
    return forget, retain


def report_info(bundle: UnlearningBundle, data_args: DataArguments, settings) -> dict:
    """What every report (report.json) records of its data and evaluation beside the figures: the bundle, the prompt
    format, the evaluation settings (an EvalSettings), and the evaluation splits the data lacks."""
    return {
        "bundle": bundle.summary(),
        "prompt_format": dataclasses.asdict(data_args.prompt_format()),
        "settings": dataclasses.asdict(settings),
        "missing_splits": bundle.missing_eval_splits(),
    }


def unlearning_eval_sets(bundle: UnlearningBundle, fmt: PromptFormat) -> dict:
    """What the trainers score at `eval_steps` (`eval_forget_prob`, `eval_retain_prob`): the forget set, and the
    evaluation's retain split (the retain set where the data has none)."""
    retain = bundle.eval_splits.get("retain", bundle.retain)
    return {"forget": sft_dataset(bundle.forget, fmt), "retain": sft_dataset(retain, fmt)}


def unlearn(
    method: str,
    config: UnlearningConfig,
    model_path: str | Path,
    bundle: UnlearningBundle,
    data_args: DataArguments,
    model_args: ModelConfig,
    method_args=None,
) -> UnlearningTrainer:
    """Unlearn `bundle`'s forget set from the model at `model_path` with `method`; saves into `config.output_dir`.

    DareU takes its rewards from `method_args` (a RewardArguments), Reveal-and-Release its target, instructions and
    reveal reward (a RevealArguments); without an attribution classifier there, one is trained from the model at
    `model_path` and saved in `<output_dir>/attributor`."""
    if method not in METHODS:
        raise ValueError(f"--method {method!r} is not a method; the methods are: {', '.join(METHODS)}.")
    config_class, trainer_class = METHODS[method]
    if not isinstance(config, config_class):
        raise TypeError(f"--method {method} takes a {config_class.__name__}, got {type(config).__name__}.")
    model_args = dataclasses.replace(model_args, model_name_or_path=str(model_path))
    tokenizer = load_tokenizer(str(model_path), model_args.model_revision)
    forget, retain = unlearning_datasets(method, config, bundle, data_args)
    peft_config = get_peft_config(model_args)
    extra = {}
    if method == "reveal_release":
        extra = reveal_release_inputs(
            method_args or RevealArguments(), bundle, data_args, model_args, config.output_dir, config.seed
        )
        forget = extra.pop("train_dataset")
        # Each round trains a LoRA module: without --use_peft, ModelConfig's default LoRA settings.
        peft_config = get_peft_config(dataclasses.replace(model_args, use_peft=True))
    if method == "dareu":
        reward_args = method_args or RewardArguments()
        classifier = None
        engine = sharding_engine(config)
        if "attribution" in reward_args.reward_funcs and reward_args.attributor is None and engine:
            raise ValueError(
                f"--attributor is required under {engine}: the attribution classifier cannot be trained inside the "
                f"sharded run. Train it first, on one process (`rlunlearn train-attributor --model_name_or_path "
                f"{model_path} --output_dir DIR` with this run's data options), and pass --attributor DIR."
            )
        with whole_models(config):
            if "attribution" in reward_args.reward_funcs:
                classifier = attributor_for_run(
                    reward_args.attributor, bundle, data_args, model_args, config.output_dir, config.seed
                )
            extra["reward_funcs"] = build_rewards(reward_args, bundle, data_args, classifier)
    if config.eval_strategy != "no":
        extra["eval_dataset"] = unlearning_eval_sets(bundle, data_args.prompt_format())
    trainer = trainer_class(
        model=load_model(model_args),
        args=config,
        train_dataset=forget,
        retain_dataset=retain,
        processing_class=tokenizer,
        peft_config=peft_config,
        **extra,
    )
    # "true" (or "last") resumes from the newest checkpoint in output_dir, a path from that checkpoint.
    resume = config.resume_from_checkpoint
    trainer.train(resume_from_checkpoint=True if str(resume).lower() in ("true", "last") else resume)
    trainer.save_model(config.output_dir)
    tokenizer.save_pretrained(config.output_dir)
    return trainer
