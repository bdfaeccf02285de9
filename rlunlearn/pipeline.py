"""The end-to-end pipeline: data -> target and retain models (cached) -> unlearning -> evaluation -> report."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from datasets import concatenate_datasets
from trl import ModelConfig, get_peft_config

from rlunlearn.trainers import METHODS, UnlearningConfig, UnlearningTrainer
from rlunlearn.trainers.utils import sharding_engine

from .attribution import RewardArguments, attributor_for_run, build_rewards
from .cache import cached_build, default_cache_dir, remove_abandoned_staging, settings_hash
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
from .pretrain import PretrainConfig, cached_base, is_offline_base, pretraining_corpus
from .reveal import RevealArguments, reveal_release_inputs

logger = logging.getLogger(__name__)

# Bump when a change to the fine-tuning code makes cached models stale.
CACHE_VERSION = 4


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

    def bundle(self) -> UnlearningBundle:
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

    def prompt_format(self) -> PromptFormat:
        return PromptFormat(self.prompt_style, self.question_template, self.system_prompt)

    def refusals(self) -> list[str]:
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


@dataclass
class PreparedModels:
    """Folders of the fine-tuned target and retain models (each with its tokenizer), the folder that holds what is
    trained from the target (its cache entry, or a run folder), and whether both came from the cache."""

    folder: Path
    target: Path
    retain: Path
    reused: bool


def offline_base(
    data_args: DataArguments,
    scratch_args: ScratchModelArguments,
    cache_dir: str | Path,
    pretrain_config: PretrainConfig | None = None,
) -> str | None:
    """The folder of the offline base for `data_args` (pretrained now, or reused from the cache), or None with
    --from_scratch."""
    if scratch_args.from_scratch:
        return None
    config = pretrain_config or PretrainConfig(output_dir="unused", report_to="none")
    started = time.time()
    folder, reused = cached_base(
        pretraining_corpus(data_args),
        config,
        cache_dir,
        scratch_args.model_preset,
        scratch_args.architecture,
        scratch_args.vocab_size,
        data_args.prompt_format(),
    )
    logger.info("Base model %s (%s)", folder, "reused" if reused else f"pretrained in {time.time() - started:.0f}s")
    return str(folder)


def finetune_model(
    bundle: UnlearningBundle,
    data_args: DataArguments,
    model_args: ModelConfig,
    scratch_args: ScratchModelArguments,
    finetune_config: FinetuneConfig,
    which: str,
    output_dir: str | Path,
) -> float:
    """Fine-tune the target (every author) or the retain (retain authors only) model into `output_dir`; returns the
    seconds it took.

    From a checkpoint (a pretrained base), the model starts from it with its tokenizer. From scratch, a tokenizer is
    trained on the bundle and the model starts from a random initialisation seeded alike for target and retain, and
    learns the general knowledge (real authors, world facts) along with the authors, so that the two differ only in
    the authors they saw.
    """
    started = time.time()
    from_scratch = not model_args.model_name_or_path
    if from_scratch:
        tokenizer = train_tokenizer(bundle.corpus(), scratch_args.vocab_size)
        model = build_model(tokenizer, scratch_args.model_preset, scratch_args.architecture, seed=finetune_config.seed)
    else:
        tokenizer = load_tokenizer(model_args.model_name_or_path, model_args.model_revision)
        model = load_model(model_args)
    config = dataclasses.replace(
        finetune_config, output_dir=str(output_dir), run_name=finetune_config.run_name or which
    )
    logger.info("Fine-tuning the %s model (%s)", which, "all authors" if which == "target" else "retain authors only")
    data = training_data(bundle, which, data_args.prompt_format(), _with_background(data_args, model_args))
    finetune(model, tokenizer, data, config, get_peft_config(model_args))
    return round(time.time() - started, 1)


def _with_background(data_args: DataArguments, model_args: ModelConfig) -> bool:
    """A model built from scratch learns the general knowledge along with the authors. So does the offline base: it
    saw that knowledge in pretraining, but a model this small loses it when fine-tuned on the authors alone (measured
    on the cpu preset: model utility 0.03 without, 0.86 with). A pretrained checkpoint keeps it."""
    if data_args.train_background is not None:
        return data_args.train_background
    return not model_args.model_name_or_path or is_offline_base(model_args.model_name_or_path)


def finetune_models(
    bundle: UnlearningBundle,
    data_args: DataArguments,
    model_args: ModelConfig,
    scratch_args: ScratchModelArguments,
    finetune_config: FinetuneConfig,
    folder: str | Path,
    which: tuple[str, ...] = ("target", "retain"),
) -> dict[str, float]:
    """`finetune_model` for each of `which` into `folder/<which>`; returns the seconds each took."""
    return {
        name: finetune_model(bundle, data_args, model_args, scratch_args, finetune_config, name, Path(folder) / name)
        for name in which
    }


def prepare_models(
    bundle: UnlearningBundle,
    data_args: DataArguments,
    model_args: ModelConfig,
    scratch_args: ScratchModelArguments,
    finetune_config: FinetuneConfig,
    cache_dir: str | Path,
) -> PreparedModels:
    """Fine-tune the target and retain models, or reuse them from the cache.

    Each model is a cache entry of its own, keyed by a hash of what it is trained on (its training rows, the prompt
    format), what it starts from (the checkpoint, or the scratch preset and the data its tokenizer is trained on) and
    every fine-tuning setting that changes the weights. So a retain model is shared by every forget set drawn beside
    the same retain authors, and an interrupted run keeps whichever model it finished (and removes the one it was
    fine-tuning; so does the next run where it was killed, along with what killed runs of earlier versions left).
    """
    from_scratch = not model_args.model_name_or_path
    fmt = data_args.prompt_format()
    with_background = _with_background(data_args, model_args)
    common = {
        "version": CACHE_VERSION,
        "format": dataclasses.asdict(fmt),
        # From scratch the tokenizer is trained on the whole bundle's text.
        "base": {**dataclasses.asdict(scratch_args), "corpus": bundle.fingerprint()}
        if from_scratch
        else model_args.model_name_or_path,
        "dtype": model_args.dtype,
        "lora": dataclasses.asdict(get_peft_config(model_args)) if model_args.use_peft else None,
        "finetune": finetune_config.cache_key(),
        "background": with_background,
    }
    for abandoned in remove_abandoned_staging(Path(cache_dir).expanduser() / "models"):
        logger.info("Removed %s, left by a killed run", abandoned)
    folders, reused = {}, []
    for which in ("target", "retain"):
        key = {
            **common,
            "which": which,
            "data": settings_hash(training_data(bundle, which, fmt, with_background).to_list()),
        }
        folder = Path(cache_dir).expanduser() / "models" / f"{bundle.name}-{which}-{settings_hash(key)[:16]}"

        def build(staging: Path, which=which) -> dict:
            shutil.rmtree(staging, ignore_errors=True)  # what a killed fine-tune left
            try:
                seconds = finetune_model(bundle, data_args, model_args, scratch_args, finetune_config, which, staging)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)  # a fine-tune cannot resume: keep nothing half-made
                raise
            return {"seconds": seconds}

        folders[which], was_reused = cached_build(folder, key, build)
        if was_reused:
            logger.info("Reusing the cached %s model in %s", which, folders[which])
        reused.append(was_reused)
    return PreparedModels(folders["target"], folders["target"], folders["retain"], reused=all(reused))


def unlearning_datasets(method: str, config: UnlearningConfig, bundle: UnlearningBundle, data_args: DataArguments):
    """The forget set in the form the method's trainer reads (its `forget_data`), and the retain set where it has a
    retain term."""
    trainer_class = METHODS[method][1]
    fmt = data_args.prompt_format()
    kind = trainer_class.forget_data
    if kind == "completion":
        forget = sft_dataset(bundle.forget, fmt)
    elif kind == "preference" and data_args.preference_chosen == "perturbed":
        # The evaluation's forget split holds the forget set's rows, in order, with their perturbed answers.
        rows = bundle.eval_splits.get("forget")
        if rows is None or "perturbed_answer" not in rows.column_names:
            raise ValueError(
                "--preference_chosen perturbed needs perturbed answers of the forget set; this data has none."
            )
        forget = preference_dataset(rows, fmt, alternative_column="perturbed_answer", seed=config.seed)
    elif kind == "preference":
        forget = preference_dataset(bundle.forget, fmt, data_args.refusals(), seed=config.seed)
    elif kind == "prompts":
        # The forget questions as prompts; `author` and `answer` ride along for reward functions that read them.
        forget = prompt_dataset(bundle.forget, fmt)
        if data_args.paraphrased_prompts:
            rows = bundle.eval_splits.get("forget")
            if rows is None or "paraphrased_question" not in rows.column_names:
                raise ValueError("--paraphrased_prompts needs paraphrased forget questions; this data has none.")
            paraphrases = prompt_dataset(rows, fmt, forget.column_names, question_column="paraphrased_question")
            forget = concatenate_datasets([forget, paraphrases])
    elif kind == "self-generated":
        forget = None  # the trainer makes its own (its extra inputs may bring seed data)
    else:
        raise ValueError(
            f"{trainer_class.__name__}.forget_data is {kind!r}; rlunlearn builds 'completion', 'preference', "
            "'prompts' or 'self-generated' forget data."
        )
    retain = sft_dataset(bundle.retain, fmt) if trainer_class.needs_retain(config) else None
    return forget, retain


@dataclass(frozen=True)
class ExtraInputs:
    """How rlunlearn makes one kind of a trainer's `extra_inputs`: the options they come from (a dataclass that the
    command line and the example scripts parse; each has an `attributor` field, the attribution classifier's folder),
    whether given options read that classifier, and the builder of the trainer's keyword arguments, called as
    build(options, config, bundle, data_args, model_args)."""

    arguments: type
    reads_attributor: Callable[..., bool]
    build: Callable[..., dict]


def _reward_inputs(reward_args: RewardArguments, config, bundle, data_args: DataArguments, model_args) -> dict:
    engine = sharding_engine(config)
    if "attribution" in reward_args.reward_funcs and reward_args.attributor is None and engine:
        raise ValueError(
            f"--attributor is required under {engine}: the attribution classifier cannot be trained inside the "
            f"sharded run. Train it first, on one process (`rlunlearn train-attributor --model_name_or_path "
            f"{model_args.model_name_or_path} --output_dir DIR` with this run's data options), and pass --attributor "
            "DIR."
        )
    # A classifier is trained (when no --attributor is given) and loaded whole, also under ZeRO-3.
    with whole_models(config):
        classifier = None
        if "attribution" in reward_args.reward_funcs:
            classifier = attributor_for_run(
                reward_args.attributor, bundle, data_args, model_args, config.output_dir, config.seed
            )
        return {"reward_funcs": build_rewards(reward_args, bundle, data_args, classifier)}


def _reveal_inputs(reveal_args: RevealArguments, config, bundle, data_args: DataArguments, model_args) -> dict:
    inputs = reveal_release_inputs(reveal_args, bundle, data_args, model_args, config.output_dir, config.seed)
    # Each round trains a LoRA module: without --use_peft, ModelConfig's default LoRA settings.
    return {**inputs, "peft_config": get_peft_config(dataclasses.replace(model_args, use_peft=True))}


# A trainer's `extra_inputs` -> how rlunlearn makes them.
EXTRA_INPUTS = {
    "rewards": ExtraInputs(RewardArguments, lambda options: "attribution" in options.reward_funcs, _reward_inputs),
    "reveal": ExtraInputs(RevealArguments, lambda options: options.reveal_reward == "attribution", _reveal_inputs),
}


def extra_inputs_of(method: str) -> ExtraInputs | None:
    """How the method's extra inputs are made (None when it needs none)."""
    trainer_class = METHODS[method][1]
    kind = trainer_class.extra_inputs
    if kind is not None and kind not in EXTRA_INPUTS:
        raise ValueError(
            f"{trainer_class.__name__}.extra_inputs is {kind!r}; rlunlearn makes {', '.join(EXTRA_INPUTS)}."
        )
    return EXTRA_INPUTS.get(kind)


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

    A method with `extra_inputs` takes them from `method_args`, an instance of their `arguments` in `EXTRA_INPUTS`
    (default: that class's defaults): DareU its rewards (a RewardArguments), Reveal-and-Release its target,
    instructions and reveal reward (a RevealArguments); without an attribution classifier there, one is trained from
    the model at `model_path` and saved in `<output_dir>/attributor`."""
    if method not in METHODS:
        raise ValueError(f"--method {method!r} is not a method; the methods are: {', '.join(METHODS)}.")
    config_class, trainer_class = METHODS[method]
    if not isinstance(config, config_class):
        raise TypeError(f"--method {method} takes a {config_class.__name__}, got {type(config).__name__}.")
    model_args = dataclasses.replace(model_args, model_name_or_path=str(model_path))
    tokenizer = load_tokenizer(str(model_path), model_args.model_revision)
    forget, retain = unlearning_datasets(method, config, bundle, data_args)
    inputs = {"train_dataset": forget, "retain_dataset": retain, "peft_config": get_peft_config(model_args)}
    extra = extra_inputs_of(method)
    if extra is not None:
        inputs.update(extra.build(method_args or extra.arguments(), config, bundle, data_args, model_args))
    if config.eval_strategy != "no":
        inputs["eval_dataset"] = unlearning_eval_sets(bundle, data_args.prompt_format())
    trainer = trainer_class(model=load_model(model_args), args=config, processing_class=tokenizer, **inputs)
    # "true" (or "last") resumes from the newest checkpoint in output_dir, a path from that checkpoint.
    resume = config.resume_from_checkpoint
    trainer.train(resume_from_checkpoint=True if str(resume).lower() in ("true", "last") else resume)
    trainer.save_model(config.output_dir)
    tokenizer.save_pretrained(config.output_dir)
    return trainer
