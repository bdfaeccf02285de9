"""The end-to-end pipeline: data -> target and retain models (cached) -> unlearning -> evaluation -> report."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from datasets import concatenate_datasets
from transformers import AutoConfig
from trl import ModelConfig, get_peft_config

from rlunlearn.rewards import check_reward
from rlunlearn.trainers import METHODS, UnlearningConfig, UnlearningTrainer
from rlunlearn.trainers.utils import sharding_engine

from .arguments import DataArguments, ScratchModelArguments, check_training_settings
from .attribution import RewardArguments, attributor_for_run, build_rewards
from .cache import cached_build, remove_abandoned_staging, settings_hash
from .data import (
    PromptFormat,
    UnlearningBundle,
    preference_dataset,
    prompt_dataset,
    reveal_instructions,
    sft_dataset,
    text_prompts,
)
from .finetune import FinetuneConfig, finetune, training_data
from .models import (
    build_model,
    check_lora_targets,
    check_model_source,
    load_model,
    load_tokenizer,
    model_init_kwargs,
    train_tokenizer,
    whole_models,
)
from .pretrain import PretrainConfig, cached_base, is_offline_base, pretraining_corpus
from .reveal import RevealArguments, reveal_release_inputs, seed_dataset

logger = logging.getLogger(__name__)

# Bump when a change to the fine-tuning code makes cached models stale.
CACHE_VERSION = 4


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
        data_args.pretraining_format(),
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
    logger.info(
        "Fine-tuning the %s model (%s)", which, "forget and retain data" if which == "target" else "retain data only"
    )
    data = training_data(bundle, which, data_args.prompt_format(), with_background(data_args, model_args))
    finetune(model, tokenizer, data, config, get_peft_config(model_args))
    return round(time.time() - started, 1)


def with_background(data_args: DataArguments, model_args: ModelConfig) -> bool:
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
    background = with_background(data_args, model_args)
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
        "background": background,
    }
    for abandoned in remove_abandoned_staging(Path(cache_dir).expanduser() / "models"):
        logger.info("Removed %s, left by a killed run", abandoned)
    folders, reused = {}, []
    for which in ("target", "retain"):
        key = {
            **common,
            "which": which,
            "data": settings_hash(training_data(bundle, which, fmt, background).to_list()),
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
    if kind == "self-generated" and fmt.style == "text":
        raise ValueError(
            f"--method {method} prompts the model to reveal what it knows of the forget targets, and the "
            f"{bundle.task} task's forget data are text, with no targets to name: use a method that trains on the "
            "text (e.g. ga, npo, flat, rmu) or DareU, which continues its openings."
        )
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
        # The forget questions as prompts (on text, each passage's opening words); the rows' other columns (`author`,
        # `answer`, the harmful stand-in's `secret`) ride along for reward functions that read them.
        rows = text_prompts(bundle.forget) if fmt.style == "text" else bundle.forget
        forget = prompt_dataset(rows, fmt, [c for c in rows.column_names if c != "question"])
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
    whether given options read that classifier, a check of those options that loads no model, and the builder of the
    trainer's keyword arguments; the last two are called as f(options, config, bundle, data_args, model_args)."""

    arguments: type
    reads_attributor: Callable[..., bool]
    check: Callable[..., None]
    build: Callable[..., dict]


def _check_rewards(reward_args: RewardArguments, config, bundle, data_args: DataArguments, model_args) -> None:
    engine = sharding_engine(config)
    if "attribution" in reward_args.reward_funcs and reward_args.attributor is None and engine:
        raise ValueError(
            f"--attributor is required under {engine}: the attribution classifier cannot be trained inside the "
            f"sharded run. Train it first, on one process (`rlunlearn train-attributor --model_name_or_path "
            f"{model_args.model_name_or_path} --output_dir DIR` with this run's data options), and pass --attributor "
            "DIR."
        )
    weights = getattr(config, "reward_weights", None)
    if weights is not None and len(weights) != len(reward_args.reward_funcs):
        raise ValueError(
            f"--reward_weights gives {len(weights)} weight(s) for {len(reward_args.reward_funcs)} --reward_funcs "
            f"({' '.join(reward_args.reward_funcs)}): give one weight a reward, in the same order."
        )
    for spec in reward_args.reward_funcs:
        if spec == "refusal":
            data_args.refusals()
        elif spec != "attribution":
            check_reward(spec)
    if reward_args.attributor is not None:
        check_model_source(reward_args.attributor, "--attributor")


def _check_reveal(reveal_args: RevealArguments, config, bundle, data_args: DataArguments, model_args) -> None:
    if reveal_args.seed_file:
        seed_dataset(reveal_args.seed_file, data_args.prompt_format())
    reveal_instructions(reveal_args.targets(bundle), reveal_args.target_kind, reveal_args.instructions_file)
    data_args.refusals()
    if reveal_args.attributor is not None and reveal_args.reveal_reward != "attribution":
        raise ValueError(
            f"--attributor is read by --reveal_reward attribution only, not {reveal_args.reveal_reward!r}: drop it, or "
            "give --reveal_reward attribution."
        )
    if reveal_args.reveal_reward == "relevance":
        reveal_args.contrasts(bundle, config.seed)
    elif reveal_args.reveal_reward != "attribution":
        check_reward(reveal_args.reveal_reward)
    if reveal_args.attributor is not None:
        check_model_source(reveal_args.attributor, "--attributor")


def _reward_inputs(reward_args: RewardArguments, config, bundle, data_args: DataArguments, model_args) -> dict:
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
    "rewards": ExtraInputs(
        RewardArguments, lambda options: "attribution" in options.reward_funcs, _check_rewards, _reward_inputs
    ),
    "reveal": ExtraInputs(
        RevealArguments, lambda options: options.reveal_reward == "attribution", _check_reveal, _reveal_inputs
    ),
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


def check_unlearning(
    method: str,
    config: UnlearningConfig,
    model_path: str | Path,
    bundle: UnlearningBundle,
    data_args: DataArguments,
    model_args: ModelConfig,
    method_args=None,
) -> None:
    """Every check of an unlearning run that loads no model, so that bad options fail in seconds: the method and its
    config, the training settings, the model folder and LoRA targets, the data the method reads, and its extra
    inputs."""
    if method not in METHODS:
        raise ValueError(f"--method {method!r} is not a method; the methods are: {', '.join(METHODS)}.")
    config_class = METHODS[method][0]
    if not isinstance(config, config_class):
        raise TypeError(f"--method {method} takes a {config_class.__name__}, got {type(config).__name__}.")
    model_args = dataclasses.replace(model_args, model_name_or_path=str(model_path))
    check_training_settings(config)
    check_model_source(str(model_path))
    model_init_kwargs(model_args)  # the quantisation flags
    check_lora_targets(model_args)
    if (Path(model_path) / "config.json").is_file():
        METHODS[method][1].check_model_config(config, AutoConfig.from_pretrained(model_path))
    unlearning_datasets(method, config, bundle, data_args)
    extra = extra_inputs_of(method)
    if extra is not None:
        extra.check(method_args or extra.arguments(), config, bundle, data_args, model_args)


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
    the model at `model_path` and saved in `<output_dir>/attributor`. Everything that can be checked without a model
    is checked first (`check_unlearning`)."""
    check_unlearning(method, config, model_path, bundle, data_args, model_args, method_args)
    trainer_class = METHODS[method][1]
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
