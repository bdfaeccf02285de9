"""The offline base: a small model pretrained, once and cached, on text that shares no author with the benchmark.

The published unlearning results come from pretrained models that learn the forget authors in a short, light
fine-tune, so the authors sit on top of the model's language rather than inside it. A small model trained from scratch
on the benchmark's 20 authors holds their facts in the same weights as its language, and no method removes one without
the other. So the CPU preset starts, as the papers do, from a pretrained base: a tokenizer and a small Llama trained
with the loss on the whole text (question and answer) on a corpus of other authors and the general knowledge the
utility splits ask about. Target and retain models are then fine-tuned from it like from any checkpoint
(`rlunlearn finetune --base_model DIR`).

The corpus (`pretraining_corpus`): on TOFU, the authors of `TOFU_BENCHMARK_AUTHORS.pretraining` (none forgotten,
kept or held out by the benchmark) and the real-authors and world-facts questions; on generated data, authors the
generator makes for pretraining only, and its world's general knowledge.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset
from transformers import TrainerCallback
from trl import SFTTrainer

from rlunlearn.trainers.utils import remove_fused_lm_head

from .cache import cached_build, settings_hash
from .data import PromptFormat, load_tofu_split, sft_dataset
from .data.draws import TOFU_BENCHMARK_AUTHORS
from .data.generator import generated_pretraining_corpus
from .data.tofu import ROWS_PER_AUTHOR
from .finetune import FinetuneConfig
from .models import build_model, train_tokenizer

logger = logging.getLogger(__name__)

# Bump when a change to the pretraining code makes cached bases stale.
PRETRAIN_VERSION = 1
# Written beside a base pretrained here: what it was trained on, and the mark `is_offline_base` reads.
PRETRAINING_RECORD = "pretraining.json"


@dataclass
class PretrainConfig(FinetuneConfig):
    r"""
    [`FinetuneConfig`] for pretraining the offline base: the loss on every token (question and answer), a cosine
    schedule from a large learning rate, larger batches, and a checkpoint every `save_steps` so that an interrupted
    run resumes. Defaults: the CPU preset's base (see docs/benchmarks.md for the measurements behind them).
    """

    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate."})
    num_train_epochs: float = field(default=8.0, metadata={"help": "Epochs over the pretraining corpus."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Examples a batch on each device."})
    warmup_steps: float = field(default=0.02, metadata={"help": "Warm-up steps, or a fraction of all steps."})
    completion_only_loss: bool | None = field(
        default=False, metadata={"help": "Loss on the answer only; pretraining learns the questions too (False)."}
    )
    save_strategy: str = field(default="steps", metadata={"help": "Checkpoints, so that a stopped run resumes."})
    save_steps: float = field(default=100, metadata={"help": "Optimisation steps between checkpoints."})
    save_total_limit: int | None = field(default=1, metadata={"help": "Checkpoints kept."})
    logging_steps: float = field(default=50, metadata={"help": "Log every N optimisation steps."})

    def cache_key(self) -> dict:
        return {**super().cache_key(), "completion_only_loss": self.completion_only_loss}


def pretraining_corpus(data_args) -> Dataset:
    """question/answer rows to pretrain on for the data `data_args` (a DataArguments) describes: on TOFU the
    benchmark's pretraining authors and TOFU's real authors and world facts; on generated data and the stand-ins of
    the other tasks (harmful, wmdp, muse) the generator's world knowledge and the further authors it makes for
    pretraining only (`generated_pretraining_corpus`)."""
    if data_args.data == "tofu":
        full = load_tofu_split(data_args.tofu_path, "full")
        rows = [
            {"question": row["question"], "answer": row["answer"]}
            for author in TOFU_BENCHMARK_AUTHORS.pretraining
            for row in full[author * ROWS_PER_AUTHOR : (author + 1) * ROWS_PER_AUTHOR]
        ]
        for split in ("real_authors_perturbed", "world_facts_perturbed"):
            rows += [
                {"question": r["question"], "answer": r["answer"]} for r in load_tofu_split(data_args.tofu_path, split)
            ]
        return Dataset.from_list(rows)
    if data_args.data == "generated":
        return generated_pretraining_corpus(
            data_args.num_authors, data_args.num_forget_authors or 2, data_args.generator_seed
        )
    if data_args.standin:
        # Their stand-ins live in the generated authors' world (the same seed, the same world): the base learns its
        # general knowledge and language from the generated authors, never its alchemy or its books.
        return generated_pretraining_corpus(seed=data_args.generator_seed)
    raise ValueError(f"--data {data_args.data!r} has no offline base: give --base_model or --from_scratch.")


class _StageProgress(TrainerCallback):
    """Logs each logged loss of the pretraining at INFO (the console shows one progress bar)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            logger.info("pretraining step %d/%d: loss %.3f", state.global_step, state.max_steps, logs["loss"])


def pretrain(
    corpus: Dataset,
    config: PretrainConfig,
    model_preset: str = "small",
    architecture: str = "llama",
    vocab_size: int = 4096,
    fmt: PromptFormat = PromptFormat(),
) -> Path:
    """Train a tokenizer on `corpus` and a `model_preset` model on it (loss on the whole text) into
    `config.output_dir`; resumes from the newest checkpoint there. Returns the folder (model and tokenizer)."""
    output = Path(config.output_dir)
    texts = [text for row in corpus for text in (row["question"], row["answer"])]
    tokenizer = train_tokenizer(texts, vocab_size)
    model = build_model(tokenizer, model_preset, architecture, seed=config.seed)
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=sft_dataset(corpus, fmt),
        processing_class=tokenizer,
        callbacks=[_StageProgress()],
    )
    resume = any(output.glob("checkpoint-*"))
    trainer.train(resume_from_checkpoint=True if resume else None)
    remove_fused_lm_head(trainer.model)
    trainer.model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    (output / PRETRAINING_RECORD).write_text(
        json.dumps({"corpus_rows": len(corpus), "model_preset": model_preset, "pretrain": config.cache_key()}, indent=2)
    )
    for checkpoint in output.glob("checkpoint-*"):
        shutil.rmtree(checkpoint)
    return output


def is_offline_base(model_name_or_path: str | None) -> bool:
    """Whether the folder holds a base pretrained here (it has the record `pretrain` writes)."""
    return bool(model_name_or_path) and (Path(model_name_or_path) / PRETRAINING_RECORD).is_file()


def cached_base(
    corpus: Dataset,
    config: PretrainConfig,
    cache_dir: str | Path,
    model_preset: str = "small",
    architecture: str = "llama",
    vocab_size: int = 4096,
    fmt: PromptFormat = PromptFormat(),
) -> tuple[Path, bool]:
    """The pretrained base for these settings from the cache, or pretrained now (resuming an interrupted run of the same
    settings from its last checkpoint). Returns its folder and whether it was reused."""
    key = {
        "version": PRETRAIN_VERSION,
        "corpus": settings_hash(corpus.to_list()),
        "model_preset": model_preset,
        "architecture": architecture,
        "vocab_size": vocab_size,
        "format": dataclasses.asdict(fmt),
        "pretrain": config.cache_key(),
    }
    folder = Path(cache_dir).expanduser() / "bases" / f"{model_preset}-{settings_hash(key)[:16]}"

    def build(staging: Path) -> dict:
        started = time.time()
        # The progress bar says "training base", not the cache's staging folder.
        staged = dataclasses.replace(config, output_dir=str(staging), run_name=config.run_name or "base")
        pretrain(corpus, staged, model_preset, architecture, vocab_size, fmt)
        return {"seconds": round(time.time() - started, 1), "corpus_rows": len(corpus)}

    return cached_build(folder, key, build)
