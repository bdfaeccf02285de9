"""Evaluate one model on every split of a bundle: the TOFU and MUSE metrics that need only that model, and the
other tasks' (harmful answers, WMDP's multiple choice, MUSE's corpora: `tasks.py`).

Metrics that compare with the retain model (forget quality, privleak, the reference attack, Tug-of-War) are in
`report.py` and read the per-example values kept here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
from datasets import Dataset
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from trl import ModelConfig

from rlunlearn.trainers.utils import tokenize_pair

from ..arguments import ProbeSettings, check_probes_apply
from ..cache import settings_hash, write_whole
from ..data import PromptFormat, UnlearningBundle
from ..models import load_model, load_tokenizer
from . import metrics
from .fluency import FLUENCY_SPLITS, FluencyJudge, judge_fluency, repetition
from .metrics import MIA_ATTACKS
from .probes import run_probes
from .report import compare_with_retain
from .scoring import EvalSettings, TokenScores, generate_answers, gradient_norms, score_answers
from .tasks import (
    KNOWMEM_MAX_NEW_TOKENS,
    KNOWMEM_STOP_STRINGS,
    TASK_SPLIT_EVALUATORS,
    VERBMEM_MAX_NEW_TOKENS,
    HarmJudge,
    cut_at,
    judge_harm,
    task_summary,
)

# Raised whenever `evaluate_split` measures something new, so that cached results without it are measured again.
SPLIT_METRICS_VERSION = 3
# Splits whose answers membership-inference attacks score (forget = members, holdout = non-members).
MIA_SPLITS = ("forget", "holdout")


def _scores_by_row(model, tokenizer, prompts, answers_per_row, fmt, settings, desc) -> list[list[TokenScores]]:
    """Score a list of answers per row (ragged) in one pass over all of them, returning each row's scores; only each
    row's first answer (the true one) gets `is_top1`, `mu` and `var`."""
    flat_prompts = [p for p, answers in zip(prompts, answers_per_row) for _ in answers]
    flat_answers = [fmt.completion(a) for answers in answers_per_row for a in answers]
    first = [position == 0 for answers in answers_per_row for position in range(len(answers))]
    flat = score_answers(model, tokenizer, flat_prompts, flat_answers, settings.batch_size, desc, statistics=first)
    rows, start = [], 0
    for answers in answers_per_row:
        rows.append(flat[start : start + len(answers)])
        start += len(answers)
    return rows


def _verbatim_memorization(model, tokenizer, prompts, completions, settings, desc) -> np.ndarray:
    """MUSE's verbatim memorisation on question-answer data: the question and the first half of the answer's tokens
    are given, the model continues greedily (at most 128 new tokens), ROUGE-L F1 (unstemmed, as MUSE's code) against
    the answer's second half."""
    prefixes, references = [], []
    for prompt, completion in zip(prompts, completions):
        prompt_ids, completion_ids = tokenize_pair(tokenizer, prompt, completion)
        if tokenizer.eos_token_id in completion_ids:
            completion_ids = completion_ids[: completion_ids.index(tokenizer.eos_token_id)]
        half = len(completion_ids) // 2
        prefixes.append(prompt_ids + completion_ids[:half])
        references.append(tokenizer.decode(completion_ids[half:], skip_special_tokens=True).strip())
    generations = generate_answers(model, tokenizer, prefixes, VERBMEM_MAX_NEW_TOKENS, settings.batch_size, desc)
    return metrics.rouge_l([g.text for g in generations], references, stemmer=False)["f1"]


def evaluate_split(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    name: str,
    data: Dataset,
    fmt: PromptFormat = PromptFormat(),
    settings: EvalSettings = EvalSettings(),
    progress: bool = False,
) -> dict:
    """Aggregates (`metrics`) and per-example values (`per_example`) of one split.

    Always: probability, ROUGE-L recall and F1 of the greedy answer, exact memorisation and extraction strength.
    With perturbed answers: the truth ratio (aggregated as TOFU does for the split, `closer_to_1` on forget and
    `true_better` elsewhere, with both variants and the para-share variant also reported), and, without paraphrased
    answers (real authors, world facts), the normalised probability. On forget and retain: MUSE's knowledge
    memorisation; on forget: verbatim memorisation; on forget and holdout: membership-inference scores. The other
    tasks' splits are evaluated as `tasks.py` says.
    """
    if name in TASK_SPLIT_EVALUATORS:
        return TASK_SPLIT_EVALUATORS[name](model, tokenizer, data, fmt, settings, name if progress else None)

    def desc(step: str) -> str | None:
        return f"{name}: {step}" if progress else None

    prompts = [fmt.prompt(q) for q in data["question"]]
    # A question's true, paraphrased and perturbed answers (in this order) are scored after one pass over its prompt.
    single_columns = [c for c in ("answer", "paraphrased_answer") if c in data.column_names]
    answers_per_row = [[row[c] for c in single_columns] + list(row.get("perturbed_answer") or []) for row in data]
    scores = _scores_by_row(model, tokenizer, prompts, answers_per_row, fmt, settings, desc("scoring"))
    true = [row[0] for row in scores]
    mean_logps = np.array([s.mean_logp for s in true])
    generations = generate_answers(
        model, tokenizer, prompts, settings.max_new_tokens, settings.batch_size, desc("generating")
    )
    texts = [g.text for g in generations]
    rouge = metrics.rouge_l(texts, data["answer"])
    per_example = {
        "probability": metrics.probability(mean_logps),
        "avg_loss": -mean_logps,
        "rougeL_recall": rouge["recall"],
        "rougeL_f1": rouge["f1"],
        "exact_memorization": np.array([metrics.exact_memorization(s.is_top1) for s in true]),
        "extraction_strength": np.array([metrics.extraction_strength(s.is_top1) for s in true]),
    }
    aggregates = {}

    if "perturbed_answer" in data.column_names:
        perturbed = [[s.mean_logp for s in row[len(single_columns) :]] for row in scores]
        if "paraphrased_answer" in data.column_names:
            correct = np.array([row[1].mean_logp for row in scores])
            per_example["paraphrased_probability"] = metrics.probability(correct)
        else:
            correct = mean_logps
            per_example["normalized_probability"] = metrics.normalized_probability(mean_logps, perturbed)
        per_example["perturbed_probability"] = np.array([np.mean(metrics.probability(row)) for row in perturbed])
        ratios = metrics.truth_ratio(correct, perturbed)
        per_example["truth_ratio"] = ratios
        aggregates["truth_ratio_closer_to_1"] = metrics.truth_ratio_closer_to_1(ratios)
        aggregates["truth_ratio_true_better"] = metrics.truth_ratio_true_better(ratios)
        aggregates["truth_ratio_para_share"] = metrics.truth_ratio_para_share(ratios)
        aggregates["truth_ratio"] = aggregates[
            "truth_ratio_closer_to_1" if name == "forget" else "truth_ratio_true_better"
        ]

    if name == "forget":
        per_example["generation_repetition"] = np.array([repetition(text) for text in texts])
    if name == "forget" and "paraphrased_answer" in data.column_names:
        # Does the model now give another answer? ROUGE-L recall of its answer against the paraphrased answer (the
        # same fact) and against each perturbed answer (wrong facts), averaged over them (open-unlearning's
        # forget_Q_A_PARA_ROUGE and forget_Q_A_PERT_ROUGE).
        per_example["paraphrased_rougeL_recall"] = metrics.rouge_l(texts, data["paraphrased_answer"])["recall"]
        if "perturbed_answer" in data.column_names:
            per_example["perturbed_rougeL_recall"] = np.array(
                [
                    np.mean(metrics.rouge_l([text] * len(wrong), wrong)["recall"])
                    for text, wrong in zip(texts, data["perturbed_answer"])
                ]
            )
    if name in ("forget", "retain"):
        decoded = [
            tokenizer.decode(g.token_ids[:KNOWMEM_MAX_NEW_TOKENS], skip_special_tokens=True) for g in generations
        ]
        knowmem = [cut_at(text, KNOWMEM_STOP_STRINGS) for text in decoded]
        per_example["knowmem_rougeL_f1"] = metrics.rouge_l(knowmem, data["answer"], stemmer=False)["f1"]
    if name == "forget":
        per_example["verbmem_rougeL_f1"] = _verbatim_memorization(
            model, tokenizer, prompts, [fmt.completion(a) for a in data["answer"]], settings, desc("verbatim")
        )
    if name in MIA_SPLITS:
        per_example["mia_loss"] = metrics.mia_loss(mean_logps)
        per_example["mia_zlib"] = metrics.mia_zlib(mean_logps, data["answer"])
        per_example["mia_min_k"] = metrics.mia_min_k([s.logps for s in true])
        per_example["mia_min_k_plus_plus"] = metrics.mia_min_k_plus_plus(
            [s.logps for s in true], [s.mu for s in true], [s.var for s in true]
        )
        per_example["mia_gradnorm"] = gradient_norms(
            model, tokenizer, prompts, [fmt.completion(a) for a in data["answer"]], desc=desc("gradient norms")
        )

    for key, values in per_example.items():
        if not key.startswith("mia_") and key not in ("avg_loss", "truth_ratio"):
            aggregates.setdefault(key, float(np.mean(values)))
    return {
        "n": len(data),
        "metrics": aggregates,
        "per_example": {key: np.asarray(values).tolist() for key, values in per_example.items()},
        "questions": list(data["question"]),
        "generations": texts,
    }


def evaluate_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    bundle: UnlearningBundle,
    fmt: PromptFormat = PromptFormat(),
    splits: Sequence[str] | None = None,
    settings: EvalSettings = EvalSettings(),
    progress: bool = True,
    probes: Sequence[str] = (),
    probe_settings: ProbeSettings = ProbeSettings(),
    model_path: str | None = None,
    retain: dict | None = None,
    cache_dir: str | Path | None = None,
    description: str = "evaluating",
    fluency: FluencyJudge | None = None,
    harm_judge: HarmJudge | None = None,
) -> dict:
    """Every split of `bundle` (or `splits`), and the model-level summary: model utility (with the components it
    misses, and those at 0, named), the forget metrics, and the membership-inference AUC of each attack (forget vs
    holdout); on another task, its own (`tasks.task_summary`; on harmful answers, their harmful rate under
    `harm_judge`, default the stand-in's rule judge `secret_span` where the data marks its secrets). With `progress`,
    one bar over the splits' questions, labelled `description`. With `probes`, the
    robustness probes too: their results under `probes`, their `probe_*` values in the summary (`model_path`, the
    folder the model was loaded from, spares the quantisation probe a save). With `retain`, the retain model's
    evaluation (this function's result for it), the summary adds what is measured against it: forget quality (and its
    KS statistic), privleak, the reference attack and Tug-of-War. With `fluency` (a judge of `fluency.py`), the summary
    adds the forget answers' mean score under it, `forget_fluency` (on harmful answers: the answers to the harmful
    prompts, `harmful_fluency`).

    `cache_dir` keeps each split's result in a file keyed by the split's rows, the prompt format and the settings, and
    reads it back on the next call: give it only for a model that never changes (a cached target or retain model), so
    that the splits forget sets drawn beside the same retain authors share are evaluated once."""
    splits = [s for s in bundle.eval_split_names if s in bundle.eval_splits] if splits is None else list(splits)
    for split in splits:
        if split not in bundle.eval_splits:
            raise ValueError(
                f"The bundle {bundle.name!r} has no {split!r} evaluation split; it has {list(bundle.eval_splits)}."
            )
    check_probes_apply(bundle.task, probes)
    if bundle.task == "harmful" and "harmful" in splits:
        harm_judge = harm_judge or default_harm_judge(bundle)
    results = {}
    questions = sum(len(bundle.eval_splits[split]) for split in splits)
    with tqdm(total=questions, desc=description, unit="question", disable=not progress, dynamic_ncols=True) as bar:
        for split in splits:
            bar.set_postfix(split=split)
            results[split] = _cached_split(model, tokenizer, split, bundle.eval_splits[split], fmt, settings, cache_dir)
            bar.update(len(bundle.eval_splits[split]))

    if bundle.task != "entities":
        evaluation = {
            "settings": asdict(settings),
            "splits": results,
            "summary": task_summary(bundle.task, results, bundle.info),
        }
        if "harmful" in results:
            judge_harm(evaluation, bundle.eval_splits["harmful"], harm_judge)
            if fluency is not None:
                judge_fluency(evaluation, fluency, "fluency", FLUENCY_SPLITS[bundle.task])
        return evaluation

    summary = {}
    utility, missing = {}, []
    for split in metrics.MODEL_UTILITY_SPLITS:
        probability_key = "normalized_probability" if split in ("real_authors", "world_facts") else "probability"
        for key in (probability_key, "rougeL_recall", "truth_ratio"):
            value = results.get(split, {}).get("metrics", {}).get(key)
            if value is None:
                missing.append(f"{split}/{key}")
            else:
                utility[f"{split}/{key}"] = value
    if utility:
        summary["model_utility"] = metrics.model_utility(utility)
        # A harmonic mean is 0 when one of its parts is: name them, so that a utility of 0 can be read.
        summary["model_utility_zero"] = [name for name, value in utility.items() if value == 0]
    summary["model_utility_missing"] = missing
    if "forget" in results:
        forget = results["forget"]["metrics"]
        for key in (
            "probability",
            "rougeL_recall",
            "truth_ratio",
            "extraction_strength",
            "exact_memorization",
            "knowmem_rougeL_f1",
            "verbmem_rougeL_f1",
            "paraphrased_rougeL_recall",
            "perturbed_rougeL_recall",
            "generation_repetition",
        ):
            if key in forget:
                summary[f"forget_{key}"] = forget[key]
    if "retain" in results:
        summary["retain_rougeL_recall"] = results["retain"]["metrics"]["rougeL_recall"]
        summary["retain_knowmem_rougeL_f1"] = results["retain"]["metrics"]["knowmem_rougeL_f1"]
    if all(s in results for s in MIA_SPLITS):
        for attack in MIA_ATTACKS:
            summary[f"mia_auc_{attack}"] = metrics.mia_auc(
                np.array(results["forget"]["per_example"][f"mia_{attack}"]),
                np.array(results["holdout"]["per_example"][f"mia_{attack}"]),
            )
    evaluation = {"settings": asdict(settings), "splits": results, "summary": summary}
    if fluency is not None and "forget" in results:
        judge_fluency(evaluation, fluency, "fluency")
    if probes:
        evaluation["probes"], probe_summary = run_probes(
            model, tokenizer, bundle, fmt, probes, settings, probe_settings, model_path
        )
        summary.update(probe_summary)
    if retain is not None:
        summary.update(compare_with_retain(evaluation, retain))
    return evaluation


def default_harm_judge(bundle: UnlearningBundle) -> HarmJudge:
    """The rule judge `secret_span` where the harmful split marks each answer's secret (the stand-in); other data need
    a judge given."""
    if "secret" not in bundle.eval_splits["harmful"].column_names:
        raise ValueError(
            f"{bundle.name} marks no secret span in its harmful answers, so no rule can judge them: give --harm_judge, "
            "a sequence-classification model (folder#harmful_label) or an importable `module:function`."
        )
    from rlunlearn.rewards import secret_span

    return secret_span


def _cached_split(model, tokenizer, name, data, fmt, settings, cache_dir) -> dict:
    """`evaluate_split`, read from (or written to) `cache_dir` when one is given."""
    if cache_dir is None:
        return evaluate_split(model, tokenizer, name, data, fmt, settings)
    key = settings_hash(
        {
            "split": name,
            "rows": data.to_list(),
            "format": asdict(fmt),
            "settings": asdict(settings),
            "metrics": SPLIT_METRICS_VERSION,
        }
    )
    path = Path(cache_dir) / f"eval-{name}-{key[:16]}.json"
    if path.is_file():
        return json.loads(path.read_text())
    result = evaluate_split(model, tokenizer, name, data, fmt, settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_whole(path, json.dumps(result))  # a run in parallel may evaluate the same model
    return result


def evaluate_folder(
    path: str,
    bundle: UnlearningBundle,
    fmt: PromptFormat = PromptFormat(),
    settings: EvalSettings = EvalSettings(),
    dtype: str = "float32",
    progress: bool = True,
    probes: Sequence[str] = (),
    probe_settings: ProbeSettings = ProbeSettings(),
    retain: dict | None = None,
    cache: bool = False,
    description: str = "evaluating",
    fluency: FluencyJudge | None = None,
    harm_judge: HarmJudge | None = None,
) -> dict:
    """`evaluate_model` (with the robustness `probes`, and what is measured against `retain`) on the saved model in
    `path` (a LoRA adapter is merged into its base), with its tokenizer. `cache` keeps each split's result in
    `<path>/evaluations` for the next call: only for a model folder that never changes."""
    model = load_model(ModelConfig(model_name_or_path=str(path), dtype=dtype), for_training=False)
    return evaluate_model(
        model,
        load_tokenizer(str(path)),
        bundle,
        fmt,
        settings=settings,
        progress=progress,
        probes=probes,
        probe_settings=probe_settings,
        model_path=str(path),
        retain=retain,
        cache_dir=Path(path) / "evaluations" if cache else None,
        description=description,
        fluency=fluency,
        harm_judge=harm_judge,
    )
