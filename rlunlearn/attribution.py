"""The attribution classifier of DareU, trained on a bundle: text -> whose data it is (each forget author, each retain
author or one `retain` label, and `none`), and the DareU rewards built on it."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from peft import get_peft_model
from transformers import AutoModelForSequenceClassification, TrainingArguments, set_seed
from trl import ModelConfig, get_peft_config

from rlunlearn.rewards import AttributionReward, RefusalBonus, SequenceClassifier, load_reward, train_classifier
from rlunlearn.trainers.utils import can_pin_memory

from .cache import cached_build, settings_hash
from .data import UnlearningBundle, attribution_dataset, text_prompts
from .models import load_tokenizer, model_init_kwargs
from .presets import STANDIN_ATTRIBUTOR

logger = logging.getLogger(__name__)

METRICS_FILE = "attributor_metrics.json"
# Part of a cached classifier's key: bumped when its training or calibration changes, so that it is trained again.
ATTRIBUTOR_VERSION = 2  # 2: the new head drawn from the seed


@dataclass
class AttributorConfig(TrainingArguments):
    """Training of the attribution classifier: transformers' TrainingArguments with defaults for a classifier
    initialised from the fine-tuned target model, plus how the labels are made."""

    output_dir: str | None = field(default=None, metadata={"help": "Where the classifier is saved."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate."})
    num_train_epochs: float = field(default=3.0, metadata={"help": "Epochs over the labelled texts."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Texts a batch on each device."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule."})
    warmup_steps: float = field(default=0.1, metadata={"help": "Warm-up steps, or a fraction of all steps."})
    save_strategy: str = field(default="no", metadata={"help": "The final classifier is saved; no checkpoints."})
    retain_labels: str = field(
        default="per_author",
        metadata={"help": "One label per retain author, or one `retain` label.", "choices": ["per_author", "one"]},
    )
    eval_fraction: float = field(default=0.1, metadata={"help": "Share of each label's rows held out."})
    calibrate: bool = field(default=True, metadata={"help": "Fit a temperature on the held-out texts."})
    prefix_views: int = field(
        default=0,
        metadata={
            "help": "Also train on this many prefixes of each owned answer (cut after a random third to all but one "
            "of its words), labelled with its owner: DareU's rollouts cut at max_completion_length are prefixes."
        },
    )
    padded_views: int = field(
        default=0,
        metadata={
            "help": "Also train on this many copies of each owned answer followed by an unowned text (a general-knowledge "
            "answer or a refusal), labelled with its owner: a policy must not escape attribution by padding an answer."
        },
    )

    def __post_init__(self):
        self.dataloader_pin_memory = self.dataloader_pin_memory and can_pin_memory()
        super().__post_init__()


def _not_a_load_report(record: logging.LogRecord) -> bool:
    return "LOAD REPORT" not in record.getMessage()


def classifier_from_lm(model_args: ModelConfig, labels: list[str]):
    """A sequence classifier over `labels` made from the causal LM `model_args.model_name_or_path`: its body, and a new
    head. transformers' load report, which lists that head as missing on every run's console, is left out; a missing
    body weight is warned of instead."""
    report_logger = logging.getLogger("transformers.modeling_utils")
    report_logger.addFilter(_not_a_load_report)
    try:
        model, loading = AutoModelForSequenceClassification.from_pretrained(
            model_args.model_name_or_path,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            output_loading_info=True,
            **model_init_kwargs(model_args),
        )
    finally:
        report_logger.removeFilter(_not_a_load_report)
    missing_from_body = sorted(k for k in loading["missing_keys"] if k.startswith(f"{model.base_model_prefix}."))
    if missing_from_body:
        logger.warning(
            "Attribution classifier: %s lacks %d weights of its body (%s), initialised at random",
            model_args.model_name_or_path,
            len(missing_from_body),
            ", ".join(missing_from_body[:5]),
        )
    return model


def train_attributor(
    bundle: UnlearningBundle,
    data_args,
    model_args: ModelConfig,
    config: AttributorConfig,
) -> tuple[SequenceClassifier, dict]:
    """Train the attribution classifier from the causal LM `model_args.model_name_or_path` (a sequence-classification
    head on it; 4-bit and LoRA as `model_args` say), save it in `config.output_dir` with its held-out metrics. On text
    it learns whose each passage's continuation is (after its opening words), the part DareU's policy writes."""
    if data_args.prompt_format().style == "text":
        bundle = dataclasses.replace(bundle, forget=text_prompts(bundle.forget), retain=text_prompts(bundle.retain))
    train, held_out, labels = attribution_dataset(
        bundle,
        data_args.prompt_format(),
        data_args.refusals(),
        retain_labels=config.retain_labels,
        eval_fraction=config.eval_fraction,
        seed=config.seed,
        prefix_views=config.prefix_views,
        padded_views=config.padded_views,
    )
    tokenizer = load_tokenizer(model_args.model_name_or_path, model_args.model_revision)
    # The new classification head (and LoRA) initialised from the run's seed, as the Trainer seeds only later: else
    # each process draws another classifier, and DareU's rewards and results with it.
    set_seed(config.seed)
    model = classifier_from_lm(model_args, labels)
    peft_config = get_peft_config(model_args)
    if peft_config is not None:
        peft_config.task_type = "SEQ_CLS"  # trains the new classification head in full beside the adapters
        model = get_peft_model(model, peft_config)
    classifier, metrics = train_classifier(model, tokenizer, train, held_out, config, calibrate=config.calibrate)
    if peft_config is not None:
        classifier.model = classifier.model.merge_and_unload()
    metrics["labels"] = labels
    if config.output_dir:
        classifier.save_pretrained(config.output_dir)
        (Path(config.output_dir) / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
    logger.info("Attribution classifier: held-out accuracy %.3f over %d labels", metrics["accuracy"], len(labels))
    return classifier, metrics


def attributor_for_run(
    attributor: str | None, bundle: UnlearningBundle, data_args, model_args: ModelConfig, output_dir: str, seed: int
) -> SequenceClassifier | str:
    """The attribution classifier an unlearning run reads: the folder `attributor`, or, when none is given, one trained
    from `model_args` (the model being unlearned) into `<output_dir>/attributor` with the run's seed."""
    if attributor is not None:
        return attributor
    config = default_attributor_config(data_args, output_dir=str(Path(output_dir) / "attributor"), seed=seed)
    return train_attributor(bundle, data_args, model_args, config)[0]


def default_attributor_config(data_args, **overrides) -> AttributorConfig:
    """The classifier's training where no classifier is given: AttributorConfig's defaults, or the recipe measured for
    the stand-in the data names (STANDIN_ATTRIBUTOR)."""
    recipe = STANDIN_ATTRIBUTOR.get(data_args.data, {}) if data_args.standin else {}
    return AttributorConfig(**{**recipe, **overrides})


@dataclass
class RewardArguments:
    """The rewards of DareU."""

    reward_funcs: list[str] = field(
        default_factory=lambda: ["attribution", "degeneracy"],
        metadata={
            "help": "Rewards, each a registered name (attribution, degeneracy, refusal, or your own), a "
            "module:attribute import path, or a sequence-classification model folder[#label]; weights in "
            "--reward_weights."
        },
    )
    attributor: str | None = field(
        default=None,
        metadata={
            "help": "Folder of the attribution classifier (`rlunlearn train-attributor`); default: train one from the "
            "model being unlearned."
        },
    )
    attribution_scope: str = field(
        default="completion",
        metadata={
            "help": "What the attribution classifier reads: the answer alone or prompt + answer.",
            "choices": ["completion", "prompt_completion"],
        },
    )


def build_rewards(reward_args: RewardArguments, bundle: UnlearningBundle, data_args, classifier) -> list:
    """The reward callables `reward_args` names; `attribution` scores the bundle's forget authors with `classifier`
    (a SequenceClassifier or a folder) and `refusal` compares with the data's refusal templates."""
    rewards = []
    for spec in reward_args.reward_funcs:
        if spec == "attribution":
            rewards.append(AttributionReward(classifier, bundle.forget_authors, scope=reward_args.attribution_scope))
        elif spec == "refusal":
            rewards.append(RefusalBonus(data_args.refusals()))
        else:
            rewards.append(load_reward(spec))
    return rewards


def attributor_settings(config: AttributorConfig) -> dict:
    """What a classifier's training depends on in its config: every field but where it is written."""
    return {k: v for k, v in config.to_dict().items() if k not in ("output_dir", "logging_dir")}


def cached_attributor(
    folder: Path, bundle: UnlearningBundle, data_args, model_path: Path, config: AttributorConfig
) -> tuple[Path, dict]:
    """The attribution classifier trained from `model_path` on `bundle`, kept in `folder` (e.g. beside the cached
    target model) and reused while the data, settings and ATTRIBUTOR_VERSION are the same (its complete.json keeps
    them). Returns its folder and held-out metrics."""
    key = {
        "version": ATTRIBUTOR_VERSION,
        "data": bundle.fingerprint(),
        "model": str(model_path),
        "settings": attributor_settings(config),
    }

    def build(staging: Path) -> None:
        # A shallow copy: the caller's config keeps its folder, and TrainingArguments' checks do not run again.
        staged = copy.copy(config)
        staged.output_dir = str(staging)
        staged.run_name = config.run_name or "attribution classifier"  # on the progress bar, not the staging folder
        train_attributor(bundle, data_args, ModelConfig(model_name_or_path=str(model_path)), staged)

    path, _ = cached_build(Path(folder) / f"attributor-{settings_hash(key)[:16]}", key, build)
    return path, json.loads((path / METRICS_FILE).read_text())
