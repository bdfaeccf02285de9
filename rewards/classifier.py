"""Sequence classifiers as rewards: a causal LM with a classification head, its label names, and a temperature.

`train_classifier` fine-tunes one with transformers' Trainer and calibrates it by temperature scaling on held-out text
(Guo et al., "On Calibration of Modern Neural Networks", ICML 2017); `ClassifierReward` scores completions with the
probability of chosen labels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from datasets import Dataset
from scipy.optimize import minimize_scalar
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
)

# Where the fitted temperature is kept in the model's config.json.
TEMPERATURE_KEY = "calibration_temperature"


def as_text(message) -> str:
    """Plain text of a prompt or completion as TRL passes them: a string, or a list of chat messages."""
    if isinstance(message, str):
        return message
    return "\n".join(turn["content"] if isinstance(turn["content"], str) else str(turn["content"]) for turn in message)


@dataclass
class SequenceClassifier:
    """A sequence-classification model with its tokenizer; `probabilities` divides the logits by `temperature`."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    temperature: float = 1.0
    max_length: int = 512
    batch_size: int = 32

    def __post_init__(self):
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # Causal LMs classify from the last non-padding token, which they find through pad_token_id.
        self.model.config.pad_token_id = self.tokenizer.pad_token_id

    @property
    def labels(self) -> list[str]:
        return [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]

    @classmethod
    def from_pretrained(cls, path: str, **model_kwargs) -> SequenceClassifier:
        """Load a classifier saved by `save_pretrained` (or any sequence-classification checkpoint)."""
        model = AutoModelForSequenceClassification.from_pretrained(path, **model_kwargs)
        model.eval()
        tokenizer = AutoTokenizer.from_pretrained(path)
        return cls(model, tokenizer, temperature=float(getattr(model.config, TEMPERATURE_KEY, 1.0)))

    def save_pretrained(self, path: str) -> None:
        setattr(self.model.config, TEMPERATURE_KEY, self.temperature)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)

    @torch.no_grad()
    def logits(self, texts: Sequence[str]) -> torch.Tensor:
        """Uncalibrated logits, (len(texts), number of labels), in float32 on the CPU."""
        was_training = self.model.training
        self.model.eval()
        device = next(self.model.parameters()).device
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                list(texts[start : start + self.batch_size]),
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=self.max_length,
            ).to(device)
            chunks.append(self.model(**batch).logits.float().cpu())
        self.model.train(was_training)
        return torch.cat(chunks) if chunks else torch.empty(0, self.model.config.num_labels)

    def probabilities(self, texts: Sequence[str]) -> torch.Tensor:
        return torch.softmax(self.logits(texts) / self.temperature, dim=-1)

    def label_ids(self, labels: Sequence[str], what: str) -> list[int]:
        """Indices of `labels`; an error names the ones this classifier does not have."""
        missing = [label for label in labels if label not in self.model.config.label2id]
        if missing:
            raise ValueError(
                f"The classifier has no label(s) {missing} for {what}; its labels are {self.labels}. Train it with "
                "those labels (`rlunlearn train-attributor` makes one label per forget author) or pick labels it has."
            )
        return [self.model.config.label2id[label] for label in labels]


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T > 0 that minimises the negative log-likelihood of `labels` under softmax(logits / T)."""

    def nll(log_t: float) -> float:
        return torch.nn.functional.cross_entropy(logits / math.exp(log_t), labels).item()

    return math.exp(minimize_scalar(nll, bounds=(math.log(0.05), math.log(20.0)), method="bounded").x)


def train_classifier(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_dataset: Dataset,
    eval_dataset: Dataset,
    args: TrainingArguments,
    calibrate: bool = True,
) -> tuple[SequenceClassifier, dict]:
    """Fine-tune `model` (a sequence-classification model whose config names the labels) on text/label rows, then
    calibrate its temperature on `eval_dataset`. Returns the classifier and held-out metrics: accuracy, accuracy per
    label, and the negative log-likelihood before and after calibration."""
    for name, dataset in (("train", train_dataset), ("eval", eval_dataset)):
        if not {"text", "label"} <= set(dataset.column_names) or len(dataset) == 0:
            raise ValueError(f"The classifier's {name} dataset needs rows with `text` and `label` (an integer id).")
    classifier = SequenceClassifier(model, tokenizer)

    def tokenize(batch):
        return tokenizer(batch["text"], truncation=True, max_length=classifier.max_length)

    train = train_dataset.map(tokenize, batched=True, remove_columns=["text"])
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
    )
    trainer.train()

    logits = classifier.logits(eval_dataset["text"])
    labels = torch.tensor(eval_dataset["label"])
    nll_before = torch.nn.functional.cross_entropy(logits, labels).item()
    if calibrate:
        classifier.temperature = fit_temperature(logits, labels)
    predicted = logits.argmax(-1).numpy()
    truth = labels.numpy()
    per_label = {classifier.labels[i]: float((predicted[truth == i] == i).mean()) for i in np.unique(truth).tolist()}
    metrics = {
        "accuracy": float((predicted == truth).mean()),
        "accuracy_per_label": per_label,
        "nll": nll_before,
        "calibrated_nll": torch.nn.functional.cross_entropy(logits / classifier.temperature, labels).item(),
        "temperature": classifier.temperature,
        "train_examples": len(train_dataset),
        "eval_examples": len(eval_dataset),
    }
    return classifier, metrics


class ClassifierReward:
    """Reward = the probability a sequence classifier gives to `labels` (summed), scored on the prompt + completion or
    on the completion alone; `sign=-1` turns it into a penalty."""

    def __init__(
        self,
        classifier: SequenceClassifier | str,
        labels: Sequence[str] | str,
        scope: str = "prompt_completion",
        sign: float = 1.0,
        name: str = "classifier",
    ):
        if isinstance(classifier, str):
            classifier = SequenceClassifier.from_pretrained(classifier)
        if scope not in ("prompt_completion", "completion"):
            raise ValueError(f"scope={scope!r}: score the `prompt_completion` or the `completion` alone.")
        self.classifier = classifier
        self.labels = [labels] if isinstance(labels, str) else list(labels)
        self.label_ids = classifier.label_ids(self.labels, f"the {name} reward")
        self.scope = scope
        self.sign = sign
        self.__name__ = name  # TRL names a reward function's logged mean after it

    def texts(self, prompts: Sequence, completions: Sequence) -> list[str]:
        if self.scope == "completion":
            return [as_text(c) for c in completions]
        return [f"{as_text(p)} {as_text(c)}" for p, c in zip(prompts, completions, strict=True)]

    def __call__(self, prompts: Sequence, completions: Sequence, **kwargs) -> list[float]:
        probabilities = self.classifier.probabilities(self.texts(prompts, completions))
        return (self.sign * probabilities[:, self.label_ids].sum(-1)).tolist()
