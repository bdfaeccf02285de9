"""The command line's console while a command works: one progress bar a stage (fine-tuning a model, unlearning,
evaluating a model), and each training stage's per-step logs in its output folder rather than on the console."""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path

import datasets
import transformers.trainer
from tqdm.auto import tqdm
from transformers.trainer_callback import ProgressCallback
from transformers.utils import logging as transformers_logging


class StageProgress(ProgressCallback):
    """A training stage on the console: one bar named after the run (`run_name`, or the output folder), showing the
    latest loss. Each log entry goes to `train.log` in the output folder (a JSON line; also to TensorBoard or W&B with
    --report_to) instead of the console."""

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and not args.disable_tqdm:
            name = args.run_name or Path(args.output_dir).name
            self.training_bar = tqdm(total=state.max_steps, desc=f"training {name}", unit="step", dynamic_ncols=True)
        self.current_step = 0

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        folder = Path(args.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / "train.log").open("a") as handle:
            handle.write(json.dumps({"step": state.global_step, **logs}, default=str) + "\n")
        if self.training_bar is not None and "loss" in logs:
            self.training_bar.set_postfix(loss=f"{logs['loss']:.4g}", refresh=False)

    def on_step_end(self, args, state, control, **kwargs):
        # No bar with --disable_tqdm (transformers then gives this class's place to PrinterCallback, replaced too).
        if self.training_bar is not None:
            super().on_step_end(args, state, control, **kwargs)

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        """No bar for the batches of an evaluation: the stage's bar is enough."""

    def on_train_end(self, args, state, control, **kwargs):
        if self.training_bar is not None:
            super().on_train_end(args, state, control, **kwargs)


@contextlib.contextmanager
def quiet_console():
    """While inside: every Trainer reports through `StageProgress` (transformers picks the progress callback of each
    Trainer from these two names of its `trainer` module, as its notebook support does), and the progress bars of
    dataset preparation and of loading and saving weights are off, and so is a library warning printed at every
    generation. Restored on exit."""
    callbacks = transformers.trainer.DEFAULT_PROGRESS_CALLBACK, transformers.trainer.PrinterCallback
    datasets_bars = datasets.is_progress_bar_enabled()
    transformers_bars = transformers_logging.is_progress_bar_enabled()
    transformers.trainer.DEFAULT_PROGRESS_CALLBACK = transformers.trainer.PrinterCallback = StageProgress
    datasets.disable_progress_bars()
    transformers_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            # TRL 1.16's generation helper reads, turns off and restores gradient checkpointing through names
            # transformers has deprecated: FutureWarnings each time a model generates.
            warnings.filterwarnings(
                "ignore",
                "`(is_gradient_checkpointing|gradient_checkpointing_(enable|disable))` is deprecated",
                FutureWarning,
            )
            yield
    finally:
        transformers.trainer.DEFAULT_PROGRESS_CALLBACK, transformers.trainer.PrinterCallback = callbacks
        if datasets_bars:
            datasets.enable_progress_bars()
        if transformers_bars:
            transformers_logging.enable_progress_bar()
