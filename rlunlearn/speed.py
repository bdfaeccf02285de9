"""`rlunlearn bench speed`: a method's trainer against the loop a user writes in ten minutes, step for step.

The baseline (`PlainLossTrainer`) is a plain transformers `Trainer` whose `compute_loss` is the method's loss written
the obvious way: full logits and a log-softmax for every group, the frozen reference run on every batch, one forward
pass per group. It reads the same batches (forget, retain and random answers drawn by the same samplers), so the two
losses agree at the first step (tested), and only how they are computed differs. The two loops run interleaved on
copies of the same random model; the table gives the median time per step of each and their ratio.
"""

from __future__ import annotations

import copy
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainingArguments

from rlunlearn.trainers import METHODS
from rlunlearn.trainers.utils import can_pin_memory

from .arguments import BenchArguments, DataArguments, SpeedBenchArguments
from .evaluation.report import format_table, markdown_table
from .models import build_model, train_tokenizer
from .pipeline import unlearning_datasets

SPEED_COLUMNS = ["method", "model", "parameters (M)", "plain loop (s/step)", "rlunlearn (s/step)", "ratio"]


# ---- the losses, written the obvious way -------------------------------------------------------------------------


def answer_logps(model, inputs: dict[str, torch.Tensor], group: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probabilities of a group's answer tokens from the full logits, and the answer-token mask."""
    input_ids = inputs[f"{group}_input_ids"]
    logits = model(input_ids=input_ids, attention_mask=inputs[f"{group}_attention_mask"]).logits[:, :-1]
    logps = torch.log_softmax(logits.float(), dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return logps, inputs[f"{group}_completion_mask"][:, 1:].float()


def token_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum()


def sequence_log_ratio(model, reference, inputs, group: str) -> torch.Tensor:
    logps, mask = answer_logps(model, inputs, group)
    with torch.no_grad():
        reference_logps, _ = answer_logps(reference, inputs, group)
    return ((logps - reference_logps) * mask).sum(1)


def retain_loss(model, reference, inputs, args) -> torch.Tensor:
    if args.retain_loss_type == "nll":
        logps, mask = answer_logps(model, inputs, "retain")
        return -token_mean(logps, mask)
    kwargs = {"input_ids": inputs["retain_input_ids"], "attention_mask": inputs["retain_attention_mask"]}
    logps = torch.log_softmax(model(**kwargs).logits[:, :-1].float(), dim=-1)
    with torch.no_grad():
        reference_logps = torch.log_softmax(reference(**kwargs).logits[:, :-1].float(), dim=-1)
    kl = (reference_logps.exp() * (reference_logps - logps)).sum(-1)
    return token_mean(kl, inputs["retain_completion_mask"][:, 1:].float())


def plain_ga(model, reference, inputs, args):
    return token_mean(*answer_logps(model, inputs, "forget"))


def plain_graddiff(model, reference, inputs, args):
    forget = token_mean(*answer_logps(model, inputs, "forget"))
    return args.forget_weight * forget + args.retain_weight * retain_loss(model, reference, inputs, args)


def plain_npo(model, reference, inputs, args):
    log_ratio = sequence_log_ratio(model, reference, inputs, "forget")
    npo = (-(2 / args.beta) * F.logsigmoid(-args.beta * log_ratio)).mean()
    return args.forget_weight * npo + args.retain_weight * retain_loss(model, reference, inputs, args)


def plain_simnpo(model, reference, inputs, args):
    logps, mask = answer_logps(model, inputs, "forget")
    mean_logps = (logps * mask).sum(1) / mask.sum(1)
    simnpo = (-(2 / args.beta) * F.logsigmoid(-args.beta * mean_logps - args.delta)).mean()
    return args.forget_weight * simnpo + args.retain_weight * retain_loss(model, reference, inputs, args)


def plain_idkdpo(model, reference, inputs, args):
    margin = sequence_log_ratio(model, reference, inputs, "refusal") - sequence_log_ratio(
        model, reference, inputs, "forget"
    )
    dpo = (-(2 / args.beta) * F.logsigmoid(args.beta * margin)).mean()
    return args.forget_weight * dpo + args.retain_weight * retain_loss(model, reference, inputs, args)


def plain_llmu(model, reference, inputs, args):
    forget = token_mean(*answer_logps(model, inputs, "forget"))
    random_logps, random_mask = answer_logps(model, inputs, "random")
    loss = args.forget_weight * forget + args.random_weight * token_mean(-random_logps, random_mask)
    return loss + args.retain_weight * retain_loss(model, reference, inputs, args)


# The methods that have a baseline: the loss of each, as a function of (model, reference, inputs, config).
PLAIN_LOSSES = {
    "ga": plain_ga,
    "graddiff": plain_graddiff,
    "npo": plain_npo,
    "simnpo": plain_simnpo,
    "idkdpo": plain_idkdpo,
    "llmu": plain_llmu,
}


class PlainLossTrainer(Trainer):
    """The baseline: a transformers `Trainer` with the method's loss in `compute_loss`, the reference a frozen copy of
    the starting model, and the extra groups (retain batch, random answers) drawn by `draw_groups(batch, step)`."""

    def __init__(self, loss_fn, method_args, draw_groups, **kwargs):
        super().__init__(**kwargs)
        self.loss_fn, self.method_args, self.draw_groups = loss_fn, method_args, draw_groups
        self.reference = copy.deepcopy(self.model).eval().requires_grad_(False)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = {**inputs, **self.draw_groups(inputs, self.state.global_step)}
        loss = self.loss_fn(model, self.reference, inputs, self.method_args)
        return (loss, {}) if return_outputs else loss


def _method_config(method: str, args: SpeedBenchArguments, output_dir: Path):
    config_class = METHODS[method][0]
    return config_class(
        output_dir=str(output_dir),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        learning_rate=1e-5,
        warmup_steps=0,
        bf16=False,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        seed=0,
        padding_free=args.padding_free,
    )


def build_trainers(method: str, model, tokenizer, bundle, data_args, args: SpeedBenchArguments, output_dir: Path):
    """The method's trainer and its baseline, each on its own copy of `model`, reading the same batches."""
    config = _method_config(method, args, output_dir / method)
    forget, retain = unlearning_datasets(method, config, bundle, data_args)
    trainer_class = METHODS[method][1]
    trainer = trainer_class(
        model=copy.deepcopy(model),
        args=config,
        train_dataset=forget,
        retain_dataset=retain,
        processing_class=tokenizer,
    )

    def draw_groups(batch, step):
        # The retain batch and LLMU's random answers, as the method's trainer draws them at this step.
        return trainer._sampled_groups(batch, step, 0)

    baseline = PlainLossTrainer(
        PLAIN_LOSSES[method],
        config,
        draw_groups,
        model=copy.deepcopy(model),
        args=TrainingArguments(
            output_dir=str(output_dir / f"{method}-plain"),
            max_steps=args.steps,
            per_device_train_batch_size=args.batch_size,
            learning_rate=1e-5,
            weight_decay=config.weight_decay,
            bf16=False,
            report_to="none",
            save_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
            remove_unused_columns=False,
            dataloader_pin_memory=can_pin_memory(),
            seed=0,
        ),
        # The trainer's tokenised forget set and collator: the same batches, in the same order (the same seed).
        train_dataset=trainer.train_dataset,
        data_collator=trainer.data_collator,
    )
    return trainer, baseline


def _seconds_per_step(trainer, steps: int) -> float:
    started = time.perf_counter()
    trainer.train()
    return (time.perf_counter() - started) / steps


def bench_speed(args: SpeedBenchArguments, cache_args, run: Path) -> list[dict]:
    """`rlunlearn bench speed`, which `SpeedBenchArguments` describes; returns the rows it prints."""
    unknown = [m for m in args.methods if m not in PLAIN_LOSSES]
    if unknown:
        raise ValueError(f"--methods {unknown} have no plain baseline; choose from {sorted(PLAIN_LOSSES)}.")
    if args.steps < 1 or args.repeats < 1:
        raise ValueError("--steps and --repeats must be at least 1.")
    if args.tofu_path:
        from .bench import draw_data  # here: bench imports this module for its subcommand table

        # The cpu preset's data and its first reported draw of forget authors, as `rlunlearn bench` draws it.
        data_args = draw_data(BenchArguments(tofu_path=args.tofu_path, draws=1))[0]
    else:
        data_args = DataArguments(data="generated", num_authors=20)
    bundle = data_args.bundle()
    tokenizer = train_tokenizer(bundle.corpus(), 4096)
    rows = []
    for model_preset in args.model_presets:
        model = build_model(tokenizer, model_preset)
        model.config.use_cache = False
        parameters = model.num_parameters()
        for method in args.methods:
            times = {"plain": [], "rlunlearn": []}
            for _ in range(args.repeats):
                trainer, baseline = build_trainers(method, model, tokenizer, bundle, data_args, args, run)
                times["plain"].append(_seconds_per_step(baseline, args.steps))
                times["rlunlearn"].append(_seconds_per_step(trainer, args.steps))
            plain, ours = statistics.median(times["plain"]), statistics.median(times["rlunlearn"])
            rows.append(
                {
                    "method": method,
                    "model": model_preset,
                    "parameters (M)": float(f"{parameters / 1e6:.3g}"),
                    "plain loop (s/step)": round(plain, 3),
                    "rlunlearn (s/step)": round(ours, 3),
                    "ratio": round(ours / plain, 2),
                }
            )
            print(f"{method} on {model_preset}: plain {plain:.3f} s/step, rlunlearn {ours:.3f} s/step", flush=True)
    table = format_table(rows, SPEED_COLUMNS)
    data = f"TOFU authors {'+'.join(map(str, data_args.forget_authors))}" if args.tofu_path else "generated authors"
    print(
        f"\nSeconds per step ({data}, batch {args.batch_size}, median of {args.repeats}, {args.steps} steps):\n{table}"
    )
    (run / "speed.json").write_text(json.dumps({"arguments": vars(args), "rows": rows}, indent=2))
    (run / "speed.md").write_text(markdown_table(rows, SPEED_COLUMNS))
    print(f"Results: {run / 'speed.json'}; table: {run / 'speed.md'}")
    return rows
