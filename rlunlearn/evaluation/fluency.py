"""Fluency of generated answers: does a model that "forgot" still speak, or does it babble?

Three measures, on the forget split's greedy answers (the ones unlearning changes most):

- `repetition` (always): seq-rep-4 of Welleck et al., "Neural Text Generation with Unlikelihood Training" (ICLR 2020),
  the share of an answer's word 4-grams that repeat an earlier one; 0 for text that never loops.
- a classifier (`classifier_judge`): the probability of a "fluent" label under a sequence-classification model, e.g.
  open-unlearning's gibberish detector (`madhurjindal/autonlp-Gibberish-Detector-492513457`, its label 0 "clean"), or
  any callable of your own.
- a perplexity (`perplexity_judge`): of each answer, given its question, under a language model that speaks well, the
  target model before unlearning in `rlunlearn bench`; babble is improbable text.

`judge_fluency` adds a judge's per-answer scores to an evaluation (`evaluate_model`'s result) and their mean to its
summary, as `forget_<name>`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from trl import ModelConfig

from rlunlearn.rewards.classifier import SequenceClassifier

from ..data import PromptFormat
from ..models import load_model, load_tokenizer
from .scoring import score_answers

# The split whose greedy answers fluency is judged on, by task (multiple choice generates none).
FLUENCY_SPLITS = {"entities": "forget", "harmful": "harmful", "muse": "verbmem_forget"}
# A judge: (questions, answers) -> one score per answer.
FluencyJudge = Callable[[Sequence[str], Sequence[str]], Sequence[float]]
REPETITION_N = 4


def repetition(text: str, n: int = REPETITION_N) -> float:
    """seq-rep-n: 1 − (distinct word n-grams) / (word n-grams) of `text`, lower-cased; 0 for fewer than n words."""
    words = text.lower().split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def classifier_judge(classifier: str | SequenceClassifier, fluent_label: str | int = 0) -> FluencyJudge:
    """A judge scoring each answer by a sequence classifier's probability of `fluent_label` (a label name or index):
    a folder or hub id of a sequence-classification model, or a loaded `SequenceClassifier`."""
    if isinstance(classifier, str):
        classifier = SequenceClassifier.from_pretrained(classifier)
    if isinstance(fluent_label, str):
        (index,) = classifier.label_ids([fluent_label], "the fluent label")
    elif 0 <= fluent_label < len(classifier.labels):
        index = fluent_label
    else:
        raise ValueError(
            f"--fluency_label {fluent_label}: the classifier has labels 0 to {len(classifier.labels) - 1} "
            f"({classifier.labels})."
        )

    def judge(questions: Sequence[str], answers: Sequence[str]) -> list[float]:
        return classifier.probabilities(list(answers))[:, index].tolist()

    return judge


def perplexity_judge(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, fmt: PromptFormat = PromptFormat()
) -> FluencyJudge:
    """A judge scoring each answer by its perplexity given its question under `model`: exp of the mean token loss,
    end-of-sequence included, as the answers' probability is measured (higher is less fluent)."""

    def judge(questions: Sequence[str], answers: Sequence[str]) -> list[float]:
        scores = score_answers(
            model, tokenizer, [fmt.prompt(q) for q in questions], [fmt.completion(a) for a in answers], statistics=False
        )
        return [float(np.exp(-score.mean_logp)) for score in scores]

    return judge


def saved_model_perplexity_judge(path: str, fmt: PromptFormat = PromptFormat(), dtype: str = "float32") -> FluencyJudge:
    """`perplexity_judge` under the saved model in `path` (the target, in `bench` and `rlunlearn eval
    --target_model`), with its tokenizer."""
    model = load_model(ModelConfig(model_name_or_path=path, dtype=dtype), for_training=False)
    return perplexity_judge(model, load_tokenizer(path), fmt)


def judge_fluency(evaluation: dict, judge: FluencyJudge, name: str, split: str = "forget") -> dict:
    """Score the generations of `split` (the forget split; the harmful prompts' on that task) in `evaluation` with
    `judge`: per answer as `<name>` in the split's per-example values, their mean as `<split>_<name>` in the split's
    metrics and the summary. Returns `evaluation`."""
    judged = evaluation["splits"][split]
    questions, answers = judged["questions"], judged["generations"]
    scores = np.asarray(judge(questions, answers), dtype=float)
    if scores.shape != (len(answers),):
        raise ValueError(
            f"The fluency judge {name!r} returned {scores.size} scores for {len(answers)} answers: return one score "
            "an answer."
        )
    judged["per_example"][name] = scores.tolist()
    judged["metrics"][name] = evaluation["summary"][f"{split}_{name}"] = float(scores.mean())
    return evaluation
