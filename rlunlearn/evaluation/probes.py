"""Robustness probes: does the model really forget, or only hide what it knew?

Published work shows unlearned models often keep the knowledge behind a thin layer: paraphrased questions slip past
(Lynch et al., "Eight Methods to Evaluate Robust Unlearning in LLMs", 2024), quantising the weights undoes an update
too small to leave its quantisation bins (Zhang et al., "Catastrophic Failure of LLM Unlearning via Quantization",
ICLR 2025), a few steps of fine-tuning on related data bring the forgotten answers back (Hu et al., "Jogging the Memory
of Unlearned LLMs Through Targeted Relearning Attacks", 2024), and sampling finds answers greedy decoding hides. Each
probe measures one of these on the forget split; run them on the retain model as well: it is the honest baseline
(what a model that never saw the forget data scores under the same probe).

- `paraphrase`: probability and greedy ROUGE-L recall of the forget answers asked with the paraphrased questions
  (TOFU's `paraphrased_question`, the generator's).
- `quantization`: the model (adapters merged) reloaded in 4-bit NF4 (double quantisation) and in 8-bit (LLM.int8),
  probability and greedy ROUGE-L recall of the forget answers; `recovered_fraction` compares with the model before
  quantisation and the target model.
- `relearning`: a copy fine-tuned for `relearning_steps` steps on half of each forget author's questions; greedy
  ROUGE-L recall and probability of the other half before and after.
- `extraction`: `extraction_samples` answers at temperature `extraction_temperature` per forget question (no top-k or
  top-p cut); the share that contain the answer's key fact (the fact span where the data has one, as the generator's
  does; else ROUGE-L recall of the answer at least `extraction_rouge_threshold`, for TOFU).
"""

from __future__ import annotations

import copy
import logging
import tempfile
from pathlib import Path

import numpy as np
from datasets import Dataset
from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from trl import ModelConfig

from ..arguments import PROBES, ProbeSettings, resolve_probes
from ..data import PromptFormat, UnlearningBundle, sft_dataset
from ..finetune import FinetuneConfig, finetune
from ..models import load_model
from . import metrics
from .scoring import EvalSettings, generate_answers, sample_answers, score_answers

# Quantised reloads: name -> the ModelConfig flags that load it.
QUANTIZATIONS = {
    "nf4": {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "use_bnb_nested_quant": True},
    "int8": {"load_in_8bit": True},
}
# Below this forget ROUGE-L recall drop from the target, nothing was forgotten and a recovered share means nothing.
MIN_FORGOTTEN_ROUGE = 0.05


def forget_answer_metrics(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: list[str],
    answers: list[str],
    fmt: PromptFormat,
    settings: EvalSettings,
) -> dict:
    """TOFU's probability (exp of the mean answer-token log-probability) and the greedy answer's ROUGE-L recall, per
    example and on average."""
    prompts = [fmt.prompt(q) for q in questions]
    scores = score_answers(
        model, tokenizer, prompts, [fmt.completion(a) for a in answers], settings.batch_size, statistics=False
    )
    probability = metrics.probability([s.mean_logp for s in scores])
    generations = generate_answers(model, tokenizer, prompts, settings.max_new_tokens, settings.batch_size)
    recall = metrics.rouge_l([g.text for g in generations], answers)["recall"]
    return {
        "forget_probability": float(np.mean(probability)),
        "forget_rougeL_recall": float(np.mean(recall)),
        "per_example_probability": np.asarray(probability).tolist(),
        "per_example_rougeL_recall": np.asarray(recall).tolist(),
    }


def _plain_copy(model: PreTrainedModel) -> PreTrainedModel:
    """A copy of `model` with any LoRA adapter merged into its weights."""
    copied = copy.deepcopy(model)
    return copied.merge_and_unload() if isinstance(copied, PeftModel) else copied


def paraphrase_probe(model, tokenizer, forget: Dataset, fmt: PromptFormat, settings: EvalSettings) -> dict:
    """The forget metrics with each forget question asked in its paraphrased form."""
    if "paraphrased_question" not in forget.column_names:
        raise ValueError(
            "The paraphrase probe needs the forget split's `paraphrased_question` column; this data has none "
            f"(columns: {forget.column_names}). Drop `paraphrase` from --probes."
        )
    return forget_answer_metrics(model, tokenizer, forget["paraphrased_question"], forget["answer"], fmt, settings)


def quantization_probe(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    forget: Dataset,
    fmt: PromptFormat,
    settings: EvalSettings,
    model_path: str | None = None,
) -> dict:
    """The forget metrics of the model reloaded in each of `QUANTIZATIONS`, with bitsandbytes. The weights quantised
    are the model's own, adapters merged: read from `model_path` when it holds a plain model, else saved first."""
    results = {}
    # LLM.int8 logs at every matmul that float32 inputs are cast to float16.
    bnb_logger = logging.getLogger("bitsandbytes.autograd._functions")
    level = bnb_logger.level
    bnb_logger.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory() as folder:
            if model_path is None or (Path(model_path) / "adapter_config.json").is_file():
                _plain_copy(model).save_pretrained(folder)
                model_path = folder
            for name, flags in QUANTIZATIONS.items():
                model_args = ModelConfig(
                    model_name_or_path=model_path, dtype=str(model.dtype).removeprefix("torch."), **flags
                )
                quantized = load_model(model_args, for_training=False)
                results[name] = forget_answer_metrics(
                    quantized, tokenizer, forget["question"], forget["answer"], fmt, settings
                )
                del quantized  # before the next reload
    finally:
        bnb_logger.setLevel(level)
    return results


def recovered_fraction(before: float, after: float, target: float) -> float | None:
    """The share of the forgotten forget ROUGE-L recall that came back: (after − before) / (target − before); None
    when the model forgot (almost) nothing (target − before < `MIN_FORGOTTEN_ROUGE`)."""
    if target - before < MIN_FORGOTTEN_ROUGE:
        return None
    return (after - before) / (target - before)


def relearning_split(forget: Dataset) -> tuple[Dataset, Dataset]:
    """Each forget author's questions alternately into the attack set and the held-out set."""
    attack, held_out = [], []
    seen: dict[str, int] = {}
    for row in forget:
        index = seen.get(row["author"], 0)
        seen[row["author"]] = index + 1
        (attack if index % 2 == 0 else held_out).append({"question": row["question"], "answer": row["answer"]})
    return Dataset.from_list(attack), Dataset.from_list(held_out)


def relearning_probe(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    forget: Dataset,
    fmt: PromptFormat,
    settings: EvalSettings,
    probe: ProbeSettings,
) -> dict:
    """The forget metrics on the held-out half of the forget questions, before and after fine-tuning a copy of the
    model (adapters merged) for `relearning_steps` steps on the other half: answer tokens only, AdamW at a constant
    learning rate."""
    if "author" not in forget.column_names:
        raise ValueError("The relearning probe splits the forget questions by `author`; the forget split has none.")
    attack, held_out = relearning_split(forget)
    if len(attack) == 0 or len(held_out) == 0:
        raise ValueError("The relearning probe needs at least two forget questions: half to relearn, half to ask.")

    def held_out_metrics(m) -> dict:
        return forget_answer_metrics(m, tokenizer, held_out["question"], held_out["answer"], fmt, settings)

    before = held_out_metrics(model)
    with tempfile.TemporaryDirectory() as folder:
        config = FinetuneConfig(
            output_dir=folder,
            max_steps=probe.relearning_steps,
            learning_rate=probe.relearning_learning_rate,
            lr_scheduler_type="constant",
            warmup_steps=0,
            weight_decay=0.0,
            per_device_train_batch_size=probe.relearning_batch_size,
            gradient_accumulation_steps=1,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            logging_steps=probe.relearning_steps,
            seed=probe.seed,
        )
        # Every weight learns, whatever a LoRA run left frozen.
        relearned = finetune(_plain_copy(model).requires_grad_(True), tokenizer, sft_dataset(attack, fmt), config)
    after = held_out_metrics(relearned)
    return {
        "steps": probe.relearning_steps,
        "learning_rate": probe.relearning_learning_rate,
        "attack_questions": len(attack),
        "held_out_questions": len(held_out),
        "before": before,
        "after": after,
    }


def extraction_probe(
    model, tokenizer, forget: Dataset, fmt: PromptFormat, settings: EvalSettings, probe: ProbeSettings
) -> dict:
    """The share of sampled answers that reveal the key fact (overall and per question), and the share of questions
    for which at least one sample does."""
    prompts = [fmt.prompt(q) for q in forget["question"]]
    samples = sample_answers(
        model,
        tokenizer,
        prompts,
        probe.extraction_samples,
        probe.extraction_temperature,
        settings.max_new_tokens,
        settings.batch_size,
        probe.seed,
    )
    by_fact = "fact" in forget.column_names
    hits = []
    for row, generations in zip(forget, samples):
        texts = [g.text for g in generations]
        if by_fact:
            hits.append([row["fact"].lower() in text.lower() for text in texts])
        else:
            recall = metrics.rouge_l(texts, [row["answer"]] * len(texts))["recall"]
            hits.append(np.asarray(recall) >= probe.extraction_rouge_threshold)
    hits = np.asarray(hits, dtype=float)
    return {
        "match": "fact span" if by_fact else f"ROUGE-L recall >= {probe.extraction_rouge_threshold}",
        "samples": probe.extraction_samples,
        "temperature": probe.extraction_temperature,
        "rate": float(hits.mean()),
        "any_rate": float(hits.max(axis=1).mean()),
        "per_example_rate": hits.mean(axis=1).tolist(),
    }


def run_probes(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    bundle: UnlearningBundle,
    fmt: PromptFormat = PromptFormat(),
    probes: tuple[str, ...] | list[str] = PROBES,
    settings: EvalSettings = EvalSettings(),
    probe: ProbeSettings = ProbeSettings(),
    model_path: str | None = None,
) -> tuple[dict, dict]:
    """The named probes on the bundle's forget evaluation split: their full results, and the values a report's summary
    shows (`probe_*`). `model_path`, the folder `model` was loaded from, spares the quantisation probe a save."""
    probes = resolve_probes(probes)
    quantized = getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)
    if quantized and {"quantization", "relearning"} & set(probes):
        raise ValueError(
            "The quantization and relearning probes need the model's full-precision weights; this model is loaded in "
            "4-/8-bit. Load it in full precision or bf16 for the probes."
        )
    forget = bundle.eval_splits.get("forget")
    if forget is None:
        raise ValueError(f"The probes read the forget evaluation split; {bundle.name!r} has none.")
    results, summary = {}, {}
    if "paraphrase" in probes:
        results["paraphrase"] = paraphrase_probe(model, tokenizer, forget, fmt, settings)
        summary["probe_paraphrase_forget_rougeL_recall"] = results["paraphrase"]["forget_rougeL_recall"]
        summary["probe_paraphrase_forget_probability"] = results["paraphrase"]["forget_probability"]
    if "quantization" in probes:
        results["quantization"] = quantization_probe(model, tokenizer, forget, fmt, settings, model_path)
        for name, reloaded in results["quantization"].items():
            summary[f"probe_{name}_forget_rougeL_recall"] = reloaded["forget_rougeL_recall"]
    if "relearning" in probes:
        results["relearning"] = relearning_probe(model, tokenizer, forget, fmt, settings, probe)
        summary["probe_relearned_forget_rougeL_recall"] = results["relearning"]["after"]["forget_rougeL_recall"]
    if "extraction" in probes:
        results["extraction"] = extraction_probe(model, tokenizer, forget, fmt, settings, probe)
        summary["probe_extraction_rate"] = results["extraction"]["rate"]
    return results, summary
