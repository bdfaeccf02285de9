"""The base of the gradient-based unlearning trainers: forget data (and optionally retain data) in, a loss per method.

A method subclasses `UnlearningTrainer`, says which data it reads (`forget_groups`, `needs_retain`,
`needs_reference`) and writes its loss in `_compute_loss`. The base does the rest the way TRL's DPOTrainer does:
loading (also 4-bit) and wrapping with LoRA, the reference model (the base with the adapter disabled under LoRA,
else a frozen copy, prepared for DeepSpeed/FSDP), per-token log-probabilities through TRL's fused LM head, and
logging. On top of that it draws retain batches per process and normalises each loss term over the tokens (or
sequences) of the global batch, so results do not depend on the number of processes or on gradient accumulation.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from accelerate.utils import is_peft_model
from datasets import Dataset
from peft import PeftConfig, get_peft_model
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback, set_seed
from transformers.integrations import is_deepspeed_zero3_enabled
from trl.models import prepare_deepspeed, prepare_fsdp
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.base_config import _BaseConfig
from trl.trainer.base_trainer import _BaseTrainer
from trl.trainer.utils import add_fused_lm_head, create_model_from_path, disable_dropout_in_model, use_adapter

from .utils import (
    ActivationCheckpointingOff,
    GroupCollator,
    NonFiniteLossError,
    RetainCollapseError,
    RetainSampler,
    TrainingGuardError,
    bf16_default,
    can_pin_memory,
    cast_trainable_to_bf16,
    gathered,
    keep_4bit_trainable_on_cpu,
    mean_answer_logp,
    multiprocess_cpu,
    pack_sequences,
    remove_fused_lm_head,
    tokenize_completions,
    with_example_index,
)

logger = logging.getLogger(__name__)


@dataclass
class UnlearningConfig(ActivationCheckpointingOff, _BaseConfig):
    r"""
    Configuration shared by the unlearning trainers; each method's config adds its own hyperparameters.

    Defaults follow open-unlearning's TOFU recipe (learning rate 1e-5, 10 epochs, weight decay 0.01, one epoch of
    warm-up, 8 examples a device with 4 accumulation steps). Small models trained from scratch need a larger learning
    rate: the CPU preset of `rlunlearn bench` sets its own.

    Parameters:
        model_init_kwargs (`dict`, *optional*):
            Keyword arguments for `AutoModelForCausalLM.from_pretrained` when the trainer is given a model name.
        disable_dropout (`bool`, defaults to `True`):
            Turn dropout off in the model and its reference, so that the probability of an answer is the same in every
            forward pass (TRL's DPO does the same).
        max_length (`int` or `None`, defaults to `512`):
            Longest prompt + answer in tokens; longer answers are cut at the end, and an example whose prompt alone
            fills it is dropped.
        dataset_num_proc (`int`, *optional*):
            Processes used to tokenise the datasets.
        retain_batch_size (`int`, *optional*):
            Retain examples drawn for each forget batch on each process, by methods that use retain data. Defaults to
            `per_device_train_batch_size`.
        bf16 (`bool`, *optional*):
            bf16 mixed precision. Defaults to on where a GPU supports it and off elsewhere (TRL's configs default to
            on, which fails on a CPU).
        activation_checkpointing (`bool`, defaults to `False`):
            Recompute activations in the backward pass: less memory, about 20% slower. Turn it on for large models.
        fused_lm_head (`bool`, *optional*):
            Compute the answers' log-probabilities chunk by chunk through TRL's fused LM head, which never holds the
            (batch, length, vocabulary) logits. Defaults to on for vocabularies of 16,384 tokens or more (every
            released model's, where those logits weigh most), and off below (the small tokenizers trained here), where
            the plain log-softmax of the logits is faster (a sixth of a step on the CPU preset's model, `rlunlearn bench
            speed`).
        padding_free (`bool`, defaults to `False`):
            Run each forward pass on the batch's sequences packed into one row, with position ids that restart at 0
            with each sequence and no padding tokens. transformers reads the sequences' boundaries from the position
            ids: FlashAttention (`attn_implementation="flash_attention_2"`) runs them as variable-length sequences,
            and SDPA and eager attention through a block-diagonal mask over the row. The values are those of the
            padded batch (tested to 1e-5).
        precompute_ref_log_probs (`bool`, defaults to `True`):
            For the losses that read a log-ratio to the reference (NPO, IdkDPO, Reveal-and-Release's `npo` release):
            compute the reference's log-probability of each forget answer once, over the whole forget set at the first
            step (one float per answer, kept while the forget set is), instead of a reference pass in every step, as
            TRL's DPO does. The KL terms still run the reference in every step: they read its whole next-token
            distribution.
        retain_probability_floor (`float`, *optional*):
            A guard against collapse: stop training when the mean answer probability of the retain eval set
            (`eval_dataset["retain"]`, measured every `eval_steps`) falls below this, and save the weights of the last
            evaluation above it (or the starting weights) in `<output_dir>/last-good`.
    """

    learning_rate: float = field(
        default=1e-5, metadata={"help": "Peak learning rate (open-unlearning's TOFU default)."}
    )
    num_train_epochs: float = field(default=10.0, metadata={"help": "Epochs over the forget set."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    warmup_steps: float = field(
        default=0.1,
        metadata={"help": "Linear warm-up: steps, or a fraction of all steps (0.1 = the first of 10 epochs)."},
    )
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Forget examples a batch on each device."})
    gradient_accumulation_steps: int = field(default=4, metadata={"help": "Batches accumulated before each update."})
    bf16: bool | None = field(
        default=None, metadata={"help": "bf16 mixed precision; defaults to on where a GPU supports it, off on CPU."}
    )
    model_init_kwargs: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "Keyword arguments for from_pretrained when the model is given by name."}
    )
    disable_dropout: bool = field(default=True, metadata={"help": "Turn dropout off in the model and its reference."})
    max_length: int | None = field(default=512, metadata={"help": "Longest prompt + answer in tokens."})
    dataset_num_proc: int | None = field(default=None, metadata={"help": "Processes used to tokenise the datasets."})
    retain_batch_size: int | None = field(
        default=None,
        metadata={"help": "Retain examples per forget batch per process (default: the forget batch size)."},
    )
    fused_lm_head: bool | None = field(
        default=None,
        metadata={
            "help": "Answer log-probabilities through TRL's fused LM head, without the full logits (default: on for "
            "vocabularies of 16,384 tokens or more)."
        },
    )
    padding_free: bool = field(
        default=False,
        metadata={
            "help": "Run each forward pass on its sequences packed in one row, without padding tokens (position ids "
            "mark where each starts)."
        },
    )
    precompute_ref_log_probs: bool = field(
        default=True,
        metadata={
            "help": "Compute the reference's log-probabilities of the forget answers once, at the first step, rather "
            "than in every step."
        },
    )
    retain_probability_floor: float | None = field(
        default=None,
        metadata={
            "help": "Stop training when the retain eval set's mean answer probability (at eval_steps) falls below "
            "this; the last weights above it are saved in <output_dir>/last-good."
        },
    )

    def __post_init__(self):
        if self.bf16 is None:
            self.bf16 = bf16_default() and not self.fp16
        self.use_cpu = self.use_cpu or multiprocess_cpu()
        self.dataloader_pin_memory = self.dataloader_pin_memory and can_pin_memory()
        super().__post_init__()
        if self.retain_batch_size is None:
            self.retain_batch_size = self.per_device_train_batch_size


RETAIN_LOSS_TYPES = ("nll", "kl")
# The vocabulary from which `fused_lm_head` defaults to on.
FUSED_LM_HEAD_MIN_VOCABULARY = 16384
# A step's groups (forget, retain, ...) run through the policy as one padded batch only while it holds at most this many
# times the tokens of separate passes: stacking pads each group to the longest, and past that the padding costs more
# than the passes it saves (2 CPU cores, `bench speed` at medium size: stacked NPO and GradDiff steps 3-5% faster on
# the generated authors' batches, about 1.06x the tokens; up to a fifth slower on TOFU's, about 1.1x; docs/scaling.md).
STACKING_PADDING_MARGIN = 1.05


@dataclass
class RetainRegularizedConfig(UnlearningConfig):
    r"""
    [`UnlearningConfig`] of the methods whose loss is γ·(forget term) + α·(retain term), as open-unlearning writes them.

    Parameters:
        forget_weight (`float`, defaults to `1.0`):
            γ, the weight of the forget term.
        retain_weight (`float`, defaults to `1.0`):
            α, the weight of the retain term; 0 drops it (and the need for retain data).
        retain_loss_type (`str`, defaults to `"nll"`):
            The retain term over the answer tokens of a retain batch: `nll`, or `kl` (KL from the model before
            unlearning, which needs the reference model).
    """

    forget_weight: float = field(default=1.0, metadata={"help": "γ, the weight of the forget term."})
    retain_weight: float = field(default=1.0, metadata={"help": "α, the weight of the retain term (0 drops it)."})
    retain_loss_type: str = field(
        default="nll",
        metadata={
            "help": "Retain term: nll, or kl to the model before unlearning.",
            "choices": list(RETAIN_LOSS_TYPES),
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.retain_loss_type not in RETAIN_LOSS_TYPES:
            raise ValueError(f"--retain_loss_type {self.retain_loss_type!r} is not one of {list(RETAIN_LOSS_TYPES)}.")
        for name in ("forget_weight", "retain_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} is {getattr(self, name)}; a weight must be 0 or more.")


class ReferenceAndGuardMixin:
    """What every rlunlearn trainer shares, whatever TRL trainer it extends: the model before unlearning (a frozen copy
    in `self.ref_model`, or the policy with its LoRA adapter disabled), per-token log-probabilities and KL against it,
    evaluation by answer probability, and the guards that stop training on a NaN or infinite loss, or on a retain
    probability below `retain_probability_floor`, with the last good weights saved."""

    # What a method declares, for callers that build its inputs (rlunlearn's pipeline asks these rather than the
    # method's name). The forget set it reads as `train_dataset`: "completion" (prompt/completion rows), "preference"
    # (prompt/chosen/rejected), "prompts" (prompts alone, which the model answers) or "self-generated" (none: the
    # trainer makes its own).
    forget_data = "completion"
    # The constructor's inputs beyond model, datasets and config, by kind: None, "rewards" (`reward_funcs`, TRL reward
    # functions) or "reveal" (a reveal reward, instructions that ask about the target, template answers).
    extra_inputs: str | None = None

    # Per-token log-probabilities through TRL's fused LM head (no (batch, length, vocabulary) logits), or from the logits.
    fused_lm_head = True
    _last_good_weights: dict[str, torch.Tensor] | None = None
    _eval_loaders: dict[int, tuple] | None = None  # id of an eval set -> (the set, its prepared loader)

    @classmethod
    def needs_retain(cls, args) -> bool:
        """Whether the loss has a retain term (then `retain_dataset` is required): by default, a retain weight above
        0."""
        return getattr(args, "retain_weight", 0) > 0

    @classmethod
    def check_model_config(cls, args, model_config) -> None:
        """Options that do not fit the model's architecture fail here, from its config alone, before it loads."""

    def check_guard_inputs(self, args, eval_dataset) -> None:
        """Bad guard settings fail here, before training."""
        floor = args.retain_probability_floor
        if floor is None:
            return
        if not 0 < floor < 1:
            raise ValueError(f"--retain_probability_floor {floor}: give a probability between 0 and 1.")
        if args.eval_strategy == "no" or not isinstance(eval_dataset, dict) or "retain" not in eval_dataset:
            raise ValueError(
                "--retain_probability_floor watches the retain eval set: give eval_dataset={'retain': ..., ...} and "
                "--eval_strategy steps with --eval_steps N."
            )

    @contextlib.contextmanager
    def reference_model(self):
        """The model before unlearning, for forward passes without gradient: the frozen copy, or the policy with its
        LoRA adapter disabled (the pre-existing adapter's frozen twin, "ref", when the model came with one)."""
        if self.ref_model is not None:
            model, adapter_context = self.ref_model, contextlib.nullcontext()
        else:
            unwrapped = self.accelerator.unwrap_model(self.model)
            model = self.model
            adapter_context = use_adapter(unwrapped, "ref" if "ref" in unwrapped.peft_config else None)
        with (
            torch.no_grad(),
            adapter_context,
            disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs),
        ):
            yield model

    def completion_logps(self, model, inputs: dict[str, torch.Tensor], group: str, reference: bool = False):
        """Per-token log-probabilities of the answers of `group` and the mask of the answer tokens, both of shape
        (batch, length - 1). With `reference=True`, under the model before unlearning and without gradient."""
        input_ids = inputs[f"{group}_input_ids"]
        completion_mask = inputs[f"{group}_completion_mask"]
        attention_mask = inputs[f"{group}_attention_mask"]

        def forward(model) -> torch.Tensor:
            model_inputs, index = self.model_inputs(input_ids, attention_mask)
            tokens = model_inputs["input_ids"]
            if not self.fused_lm_head:
                logits = model(**model_inputs, use_cache=False).logits[:, :-1]
                # One fused log-softmax and gather over the whole batch (TRL's selective_log_softmax loops over rows).
                logps = -F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten(), reduction="none").view(
                    tokens.size(0), -1
                )
            else:
                labels = input_ids.masked_fill(completion_mask == 0, -100)
                if index is not None:
                    labels = labels[attention_mask.bool()][None]
                logps = model(**model_inputs, labels=labels, fused_lm_head=True, use_cache=False).log_probs
            # Packed, the value of token k (from token k - 1) sits at k - 1.
            return logps if index is None else logps[0][index[:, 1:] - 1]

        if reference:
            with self.reference_model() as reference_model:
                logps = forward(reference_model)
        else:
            logps = forward(model)
        mask = completion_mask[:, 1:].to(logps.dtype)
        return logps[:, -mask.size(1) :], mask

    def answer_logits(self, model, inputs: dict[str, torch.Tensor], group: str, reference: bool = False):
        """The next-token logits (float32) before each token of `group`, (batch, length - 1, vocabulary), and the mask
        of the answer tokens, (batch, length - 1), as `completion_logps` gives them: for the losses that read whole
        next-token distributions. With `reference=True`, under the model before unlearning and without gradient."""
        model_inputs, index = self.model_inputs(inputs[f"{group}_input_ids"], inputs[f"{group}_attention_mask"])
        if reference:
            with self.reference_model() as reference_model:
                logits = reference_model(**model_inputs, use_cache=False).logits
        else:
            logits = model(**model_inputs, use_cache=False).logits
        if index is not None:
            logits = logits[0][index]
        return logits[:, :-1].float(), inputs[f"{group}_completion_mask"][:, 1:].float()

    def model_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[dict, torch.Tensor | None]:
        """The forward pass's inputs for a right-padded batch; with `padding_free`, its tokens packed in one row, and
        the index that puts each padded place's token back (else None)."""
        # DareU's config, TRL's GRPOConfig, has no `padding_free`: its retain passes stay padded.
        if not getattr(self.args, "padding_free", False):
            return {"input_ids": input_ids, "attention_mask": attention_mask}, None
        packed_ids, position_ids, index = pack_sequences(input_ids, attention_mask)
        return {"input_ids": packed_ids, "position_ids": position_ids}, index

    def reference_kl(self, model, inputs: dict[str, torch.Tensor], group: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token KL(reference ‖ model) of the next-token distributions at the answer tokens of `group`, and their
        mask, both (batch, length - 1)."""
        logits, mask = self.answer_logits(model, inputs, group)
        reference_logits, _ = self.answer_logits(model, inputs, group, reference=True)
        logps, reference_logps = logits.log_softmax(-1), reference_logits.log_softmax(-1)
        return (reference_logps.exp() * (reference_logps - logps)).sum(-1), mask

    def retain_values(self, model, inputs: dict[str, torch.Tensor], loss_type: str):
        """The retain regulariser per answer token of the retain batch, and the mask of those tokens: the KL from the
        model before unlearning (`"kl"`), or the NLL (`"nll"`)."""
        if loss_type == "kl":
            return self.reference_kl(model, inputs, "retain")
        logps, mask = self.completion_logps(model, inputs, "retain")
        return -logps, mask

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """The unlearning metrics at evaluation (`eval_strategy`/`eval_steps`, or a call): the mean answer probability
        (TOFU's exp(−mean answer-token NLL) per example) of each eval set, logged as `<prefix>_<name>_prob`, e.g.
        `eval_forget_prob` and `eval_retain_prob` for `eval_dataset={"forget": ..., "retain": ...}`.

        Eval sets are prompt/completion datasets. Every process scores its share of the examples and the shares are
        gathered, so the figures do not depend on the number of processes (and sharded models see the same forward
        passes on every process)."""
        datasets = self.eval_dataset if eval_dataset is None else eval_dataset
        if datasets is None:
            raise ValueError(
                "Evaluation needs `eval_dataset`: prompt/completion datasets, e.g. {'forget': ..., 'retain': ...}."
            )
        if not isinstance(datasets, dict):
            datasets = {None: datasets}
        was_training = self.model.training
        self.model.eval()
        metrics = {
            "_".join(filter(None, (metric_key_prefix, name, "prob"))): self.answer_probability(dataset)
            for name, dataset in datasets.items()
        }
        # Logged in eval mode, so that the training metrics gathered since the last log stay in the next training log.
        self.log(metrics)
        self.model.train(was_training)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        self._guard_retain_probability(metrics.get(f"{metric_key_prefix}_retain_prob"))
        return metrics

    def _trainable_weights(self) -> dict[str, torch.Tensor]:
        """A CPU copy of the trainable weights. Under ZeRO-3 each process holds a part of each parameter: they are
        gathered one at a time, and the main process alone keeps the copy (restoring broadcasts it)."""
        weights = {}
        for name, param in self.model.named_parameters():
            if param.requires_grad:
                with gathered(param):
                    if self.accelerator.is_main_process or not hasattr(param, "ds_id"):
                        weights[name] = param.detach().to("cpu", copy=True)
        return weights

    def _guard_retain_probability(self, retain_probability: float | None) -> None:
        """During training with `retain_probability_floor`: keep the weights of an evaluation above the floor, or put
        the last kept ones back and stop below it."""
        floor = self.args.retain_probability_floor
        if floor is None or retain_probability is None or self._last_good_weights is None:
            return
        if retain_probability >= floor:
            self._last_good_weights, self._last_good_step = self._trainable_weights(), self.state.global_step
            return
        with torch.no_grad():
            for name, param in self.model.named_parameters():
                if param.requires_grad:
                    with gathered(param, modifier_rank=0):
                        if name in self._last_good_weights:
                            param.copy_(self._last_good_weights[name])
        raise RetainCollapseError(
            f"The retain probability fell to {retain_probability:.4f} at step {self.state.global_step}, below "
            f"--retain_probability_floor {floor}: the model is losing what it should keep. Lower the learning rate or "
            f"raise the retain weight. The weights are those of step {self._last_good_step}, the last evaluation above "
            "the floor."
        )

    def answer_probability(self, dataset: Dataset) -> float:
        """Mean over the examples of a prompt/completion dataset of exp(mean log-probability of the answer tokens)."""
        probabilities = []
        with torch.no_grad():
            for batch in self._eval_loader(dataset):
                logps, mask = self.completion_logps(self.model, batch, "eval")
                probabilities.append(self.accelerator.gather_for_metrics(mean_answer_logp(logps, mask).exp()))
        return torch.cat(probabilities).float().mean().item()

    def _eval_loader(self, dataset: Dataset):
        """The dataset tokenised and in a prepared loader, made once for every evaluation of the run."""
        if self._eval_loaders is None:
            self._eval_loaders = {}
        loaders = self._eval_loaders
        if id(dataset) not in loaders:
            for column in ("prompt", "completion"):
                if column not in dataset.column_names:
                    raise ValueError(
                        f"An eval set needs `prompt` and `completion` columns; this one has {dataset.column_names}."
                    )
            tokenized = tokenize_completions(
                dataset, self.processing_class, ["completion"], self.args.max_length, "eval"
            )
            loader = torch.utils.data.DataLoader(
                tokenized.select_columns(["prompt_ids", "completion_ids"]),
                batch_size=self.args.per_device_eval_batch_size,
                collate_fn=GroupCollator(self.processing_class.pad_token_id, {"eval": "completion"}),
            )
            # The set is kept beside its loader, so that its id cannot pass to another object.
            loaders[id(dataset)] = (dataset, self.accelerator.prepare(loader))
        return loaders[id(dataset)][1]

    def check_finite(self, loss: torch.Tensor) -> torch.Tensor:
        """`loss`, or a `NonFiniteLossError` (on every process) if it is NaN or infinite on any."""
        finite = self.accelerator.gather(torch.isfinite(loss.detach()).reshape(1)).all()
        if not finite:
            raise NonFiniteLossError(
                f"The {self._name} loss became {loss.item()} at step {self.state.global_step}: lower the learning rate "
                "or check the data (an answer with no tokens, a probability of exactly zero)."
            )
        return loss

    def train(self, *args, **kwargs):
        if self.args.retain_probability_floor is not None:
            self._last_good_weights, self._last_good_step = self._trainable_weights(), self.state.global_step
        try:
            return super().train(*args, **kwargs)
        except TrainingGuardError as error:
            # The failing step was never applied (or the last good weights were put back): save what is in hand.
            path = os.path.join(self.args.output_dir, "last-good")
            self.save_model(path)
            raise type(error)(f"{error} Training stopped; the last good weights are saved in {path}.") from None
        finally:
            self._last_good_weights = None


class UnlearningTrainer(ReferenceAndGuardMixin, _BaseTrainer):
    """Base trainer: forget set as `train_dataset` (prompt/completion, or prompt/chosen/rejected), optional
    `retain_dataset` (prompt/completion), and a loss written by the subclass in `_compute_loss`. `eval_dataset`
    (prompt/completion sets, e.g. {"forget": ..., "retain": ...}) is scored for its answers' probability at evaluation.

    In `_compute_loss`, `self.completion_logps(model, inputs, group)` gives per-token log-probabilities of a group's
    answers, and `self.token_mean` / `self.sequence_mean` average a term over the global batch and log it.
    """

    config_class = UnlearningConfig
    # Which completions of the forget set the loss reads: group name -> dataset column.
    forget_groups: dict[str, str] = {"forget": "completion"}
    # Groups whose loss term reads the full logits (`answer_logits`), left out of the joint pass of the others.
    full_logit_groups: tuple[str, ...] = ()
    # The name of the LoRA adapter made from `peft_config`.
    adapter_name = "default"
    # Loss terms divide by counts over the whole accumulation window, so the Trainer must not divide again.
    loss_is_scaled_for_ga = True
    _tag_names = ["rlunlearn", "unlearning"]
    _name = "Unlearning"

    def __init__(
        self,
        model: str | PreTrainedModel,
        args: UnlearningConfig | None = None,
        train_dataset: Dataset | None = None,
        retain_dataset: Dataset | None = None,
        eval_dataset: Dataset | dict[str, Dataset] | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        ref_model: PreTrainedModel | None = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple = (None, None),
        peft_config: PeftConfig | None = None,
        quantization_config=None,
    ):
        model_id = model if isinstance(model, str) else getattr(model.config, "_name_or_path", "") or "model"
        if args is None:
            args = self.config_class(output_dir=f"{os.path.basename(model_id)}-{self._name}")
        elif not isinstance(args, self.config_class):
            raise TypeError(f"{type(self).__name__} takes a {self.config_class.__name__}, got {type(args).__name__}.")
        if train_dataset is None and self.forget_data != "self-generated":
            raise ValueError(f"{type(self).__name__} needs the forget set as `train_dataset`.")
        if self.needs_retain(args) and retain_dataset is None:
            raise ValueError(f"{type(self).__name__} needs a `retain_dataset` (prompt/completion) for its retain term.")
        self.check_guard_inputs(args, eval_dataset)

        # Model, as TRL's trainers load it
        model_init_kwargs = dict(args.model_init_kwargs or {})
        loaded_from_name = isinstance(model, str)
        if loaded_from_name:
            if quantization_config is not None:
                model_init_kwargs["quantization_config"] = quantization_config
            model = create_model_from_path(model, **model_init_kwargs)
        elif quantization_config is not None:
            raise ValueError(
                "`quantization_config` applies only when the model is given by name; load it quantised yourself."
            )
        # A model fresh from another TRL trainer carries that trainer's patched forward: start clean.
        remove_fused_lm_head(model.get_base_model() if is_peft_model(model) else model)
        quantized = getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)
        if quantized and peft_config is None and not is_peft_model(model):
            raise ValueError("A 4-/8-bit model cannot be trained directly: pass a `peft_config` (LoRA) as well.")

        if processing_class is None:
            processing_class = AutoTokenizer.from_pretrained(model_id)
        if processing_class.pad_token is None:
            processing_class.pad_token = processing_class.eos_token
            logger.warning(
                "The tokenizer has no pad token: padding with its EOS token, %r.", processing_class.eos_token
            )
        model.config.pad_token_id = processing_class.pad_token_id

        # LoRA, initialised from the run's seed (the Trainer seeds only later), so that a run does not depend on what ran
        # before it in the process.
        if peft_config is not None:
            set_seed(args.seed)
            if is_peft_model(model):
                raise ValueError("The model already has LoRA adapters and a `peft_config` was passed too: give one.")
            model = get_peft_model(model, peft_config, adapter_name=self.adapter_name)
        elif is_peft_model(model) and self.needs_reference(args) and ref_model is None:
            # An adapter that was trained before is part of the starting point: keep a frozen copy as the reference.
            model.add_adapter("ref", model.peft_config["default"])
            for name, param in model.named_parameters():
                if ".default." in name:
                    model.get_parameter(name.replace(".default.", ".ref.")).data.copy_(param.data)
        if is_peft_model(model) and args.gradient_checkpointing:
            model.enable_input_require_grads()
        if quantized:
            keep_4bit_trainable_on_cpu(model)
        if quantized and args.bf16:
            cast_trainable_to_bf16(model)

        # Data
        forget = None
        if train_dataset is not None:
            forget = tokenize_completions(
                train_dataset,
                processing_class,
                list(self.forget_groups.values()),
                args.max_length,
                "forget",
                args.dataset_num_proc,
            )
            forget = with_example_index(forget)
        collator = GroupCollator(processing_class.pad_token_id, dict(self.forget_groups))

        super().__init__(
            model=model,
            args=args,
            data_collator=collator,
            train_dataset=forget,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
        )

        self.retain_sampler = None
        if self.needs_retain(args):
            retain = tokenize_completions(
                retain_dataset, processing_class, ["completion"], args.max_length, "retain", args.dataset_num_proc
            )
            self.retain_sampler = RetainSampler(
                retain, collator, args.retain_batch_size, args.seed, self.accelerator.process_index
            )

        # Reference model: the adapter-disabled base under LoRA, else a frozen copy of the starting weights.
        self.ref_model = None
        if self.needs_reference(args) and not is_peft_model(self.model):
            if ref_model is None and (loaded_from_name or is_deepspeed_zero3_enabled()):
                # ZeRO-3 partitions the weights as they load, so a copy of the model would hold only its shards: load
                # the starting weights again, as TRL's trainers do.
                ref_model = create_model_from_path(model_id, **{"dtype": self.model.dtype, **model_init_kwargs})
            elif ref_model is None:
                ref_model = copy.deepcopy(self.model)
            ref_model.requires_grad_(False)
            if self.is_deepspeed_enabled:
                self.ref_model = prepare_deepspeed(ref_model, self.accelerator)
            elif self.is_fsdp_enabled:
                self.ref_model = prepare_fsdp(ref_model, self.accelerator)
            else:
                self.ref_model = self.accelerator.prepare_model(ref_model, evaluation_mode=True)
        if args.disable_dropout:
            disable_dropout_in_model(self.model)
            if self.ref_model is not None:
                disable_dropout_in_model(self.ref_model)

        # Per-token log-probabilities without materialising the (batch, length, vocabulary) logits, where they are large.
        self.fused_lm_head = args.fused_lm_head
        if self.fused_lm_head is None:
            self.fused_lm_head = self.model.config.get_text_config().vocab_size >= FUSED_LM_HEAD_MIN_VOCABULARY
        if self.fused_lm_head:
            add_fused_lm_head(self.model.get_base_model() if is_peft_model(self.model) else self.model)
            if self.ref_model is not None:
                add_fused_lm_head(self.accelerator.unwrap_model(self.ref_model))

        self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
        # The forget set and, per group, its answers' summed log-probabilities under the reference
        # (`precompute_ref_log_probs`); the policy's log-probabilities of each group in the current step.
        self._reference_tables: tuple[Dataset, dict[str, torch.Tensor]] | None = None
        self._step_logps: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
        self._normalizers: dict[str, torch.Tensor] = {}
        self._loss_scale = 1
        self._num_tokens = 0  # tokens of every forward pass on all processes, as TRL's trainers log them
        self.model.add_model_tags(self._tag_names)

    # ---- what a method declares ------------------------------------------------------------------------------------

    @classmethod
    def needs_reference(cls, args: UnlearningConfig) -> bool:
        """Whether the loss compares with the model before unlearning: by default, when its retain term is the KL."""
        return cls.needs_retain(args) and args.retain_loss_type == "kl"

    def _compute_loss(self, model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    # ---- helpers for `_compute_loss` ---------------------------------------------------------------------------------

    def retain_term(self, model, inputs: dict[str, torch.Tensor], loss_type: str) -> torch.Tensor:
        """The retain regulariser over the answer tokens of the retain batch: the NLL (`"nll"`), or the KL from the
        model before unlearning (`"kl"`); logged as `retain_nll` / `retain_kl`, with `retain_prob`."""
        values, mask = self.retain_values(model, inputs, loss_type)
        if loss_type == "nll":
            self.log_metric("retain_prob", mean_answer_logp(-values, mask).exp())
        return self.token_mean(values, mask, "retain", name=f"retain_{loss_type}")

    def log_ratio(self, model, inputs: dict[str, torch.Tensor], group: str) -> torch.Tensor:
        """Per answer of `group`, log π_θ(y|x) − log π_ref(y|x) summed over its tokens (π_ref the model before
        unlearning); logs the answers' probability as `<group>_prob`."""
        logps, mask = self.completion_logps(model, inputs, group)
        self.log_metric(f"{group}_prob", mean_answer_logp(logps, mask).exp())
        return (logps * mask).sum(1) - self.reference_sequence_logps(model, inputs, group)

    def reference_sequence_logps(self, model, inputs: dict[str, torch.Tensor], group: str) -> torch.Tensor:
        """Per answer of `group`, log π_ref(y|x) summed over its tokens: read from the table computed once over the
        forget set (`precompute_ref_log_probs`), or from a reference pass over the batch."""
        column = self.data_collator.groups.get(group)
        if self.args.precompute_ref_log_probs and "index" in inputs and column is not None:
            return self._reference_table(group, column)[inputs["index"]]
        reference_logps, mask = self.completion_logps(model, inputs, group, reference=True)
        return (reference_logps * mask).sum(1)

    def _reference_table(self, group: str, column: str) -> torch.Tensor:
        """The reference's summed log-probability of every answer of `group` in the forget set, by example index,
        computed on first use. Every process scores the whole set, so that sharded models run the same passes."""
        dataset, tables = self._reference_tables or (None, {})
        if dataset is not self.train_dataset:  # Reveal-and-Release sets new forget data each round
            tables = {}
        if group not in tables:
            values = []
            with self.reference_model() as reference:
                for batch in self.whole_set_batches(self.train_dataset, group, column):
                    # The base's pass: inside a step, this class's would score the batch as the policy's.
                    logps, mask = ReferenceAndGuardMixin.completion_logps(self, reference, batch, group)
                    values.append((logps * mask).sum(1))
            tables[group] = torch.cat(values)
        self._reference_tables = (self.train_dataset, tables)
        return tables[group]

    def whole_set_batches(self, dataset: Dataset, group: str, column: str):
        """Batches (on this process's device) of a whole tokenised set, in order, as `group` from its `column`: for
        values computed once over a set. Every process reads all of it, so that sharded models run the same passes."""
        loader = torch.utils.data.DataLoader(
            dataset.select_columns(["prompt_ids", f"{column}_ids"]),
            batch_size=self.args.per_device_eval_batch_size,
            collate_fn=GroupCollator(self.processing_class.pad_token_id, {group: column}),
        )
        for batch in loader:
            yield {key: value.to(self.accelerator.device) for key, value in batch.items()}

    def log_answer_probability(self, logits: torch.Tensor, mask: torch.Tensor, inputs: dict, group: str) -> None:
        """Log `<group>_prob`, the answers' probability (as `log_ratio` logs it), from the full logits of
        `answer_logits`."""
        tokens = inputs[f"{group}_input_ids"][:, 1:, None]
        token_logps = logits.detach().log_softmax(-1).gather(-1, tokens).squeeze(-1)
        self.log_metric(f"{group}_prob", mean_answer_logp(token_logps, mask).exp())

    def completion_logps(self, model, inputs: dict[str, torch.Tensor], group: str, reference: bool = False):
        """As the base's; in a training step, the policy's log-probabilities of every group the loss reads come from
        one forward pass over them all (see `_policy_groups`)."""
        groups = self._policy_groups(inputs) if self._step_logps is not None and not reference else []
        if group not in groups:
            return super().completion_logps(model, inputs, group, reference)
        if group not in self._step_logps:
            self._step_logps.update(self._joint_completion_logps(model, inputs, groups))
        return self._step_logps[group]

    def _policy_groups(self, inputs: dict[str, torch.Tensor]) -> list[str]:
        """The groups of a batch whose answers the loss scores under the policy in one pass: all of them, but those
        whose terms read the full logits (`full_logit_groups`, and the retain batch when its term is the KL); none, on one
        process and padded, where stacking them would pad them by more than `STACKING_PADDING_MARGIN`."""
        full_logits = set(self.full_logit_groups)
        if getattr(self.args, "retain_loss_type", "") == "kl":
            full_logits.add("retain")
        groups = [key.removesuffix("_input_ids") for key in inputs if key.endswith("_input_ids")]
        groups = [group for group in groups if group not in full_logits]
        # Packed in one row, stacked groups add no padding. Across processes every one runs the same passes, as
        # sharded weights (ZeRO-3, FSDP) are gathered in each pass: a choice from each process's own batch could differ.
        if getattr(self.args, "padding_free", False) or self.accelerator.num_processes > 1:
            return groups
        shapes = [inputs[f"{group}_input_ids"].shape for group in groups]
        separate = sum(rows * width for rows, width in shapes)
        stacked = sum(rows for rows, _ in shapes) * max((width for _, width in shapes), default=0)
        return groups if stacked <= STACKING_PADDING_MARGIN * separate else []

    def _joint_completion_logps(self, model, inputs: dict[str, torch.Tensor], groups: list[str]) -> dict:
        """`completion_logps` of each of `groups` from one forward pass over their batches stacked (right-padded to the
        longest): one pass costs less than several on small batches, and the values are those of separate passes."""
        width = max(inputs[f"{group}_input_ids"].size(1) for group in groups)

        def stacked(name: str, value: int) -> torch.Tensor:
            return torch.cat(
                [
                    F.pad(inputs[f"{group}_{name}"], (0, width - inputs[f"{group}_{name}"].size(1)), value=value)
                    for group in groups
                ]
            )

        joint = {
            "joint_input_ids": stacked("input_ids", self.processing_class.pad_token_id),
            "joint_attention_mask": stacked("attention_mask", 0),
            "joint_completion_mask": stacked("completion_mask", 0),
        }
        logps, mask = ReferenceAndGuardMixin.completion_logps(self, model, joint, "joint")
        results, start = {}, 0
        for group in groups:
            rows, length = inputs[f"{group}_input_ids"].shape
            results[group] = (logps[start : start + rows, : length - 1], mask[start : start + rows, : length - 1])
            start += rows
        return results

    def token_mean(self, values: torch.Tensor, mask: torch.Tensor, group: str, name: str | None = None) -> torch.Tensor:
        """Mean of per-token `values` over the answer tokens of `group` in the global batch (all processes and
        accumulation steps), as this process's share of it; logged under `name`."""
        total = (values * mask).sum()
        if name is not None:
            self._log_mean(name, total.detach(), mask.sum())
        return total * self._loss_scale / self._normalizers.get(f"{group}_tokens", mask.sum()).clamp(min=1)

    def sequence_mean(self, values: torch.Tensor, group: str, name: str | None = None) -> torch.Tensor:
        """Mean of per-sequence `values` over the sequences of `group` in the global batch; logged under `name`."""
        count = torch.tensor(values.numel(), device=values.device, dtype=values.dtype)
        if name is not None:
            self._log_mean(name, values.detach().sum(), count)
        return values.sum() * self._loss_scale / self._normalizers.get(f"{group}_sequences", count)

    def log_metric(self, name: str, values: torch.Tensor) -> None:
        """Log the mean of `values` over this batch on all processes."""
        values = values.detach().float().reshape(-1)
        self._log_mean(name, values.sum(), torch.tensor(values.numel(), device=values.device, dtype=values.dtype))

    def _log_mean(self, name: str, total: torch.Tensor, count: torch.Tensor) -> None:
        mode = "train" if self.model.training else "eval"
        gathered = self.accelerator.gather(torch.stack([total.float(), count.float()]).reshape(1, 2)).sum(dim=0)
        self._metrics[mode][name].append((gathered[0] / gathered[1].clamp(min=1)).item())

    # ---- batches, normalisers and the loss --------------------------------------------------------------------------

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = [
                "prompt_ids",
                "index",
                *(f"{column}_ids" for column in self.forget_groups.values()),
            ]

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """Take the accumulation window's forget batches, add this process's retain batches, and count the answer
        tokens and sequences of each group over the whole window on all processes: the loss terms divide by these."""
        batches, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        for micro_step, batch in enumerate(batches):
            batch.update(self._sampled_groups(batch, self.state.global_step, micro_step))
        return batches, self._count_items(batches, device)

    def _sampled_groups(self, batch: dict[str, torch.Tensor], step: int, micro_step: int) -> dict[str, torch.Tensor]:
        """Groups drawn for this process at this step rather than read from the forget set: the retain batch."""
        return self.retain_sampler.draw(step, micro_step) if self.retain_sampler is not None else {}

    def _count_items(self, batches: list[dict], device) -> dict[str, torch.Tensor]:
        groups = sorted(
            {key.removesuffix("_completion_mask") for b in batches for key in b if key.endswith("_completion_mask")}
        )
        # Answer tokens and sequences of each group, then every token of every forward pass (logged as num_tokens).
        counts = torch.zeros(2 * len(groups) + 1, device=device)
        for batch in batches:
            for i, group in enumerate(groups):
                mask = batch[f"{group}_completion_mask"]
                counts[2 * i] += mask[:, 1:].sum()
                counts[2 * i + 1] += mask.size(0)
                counts[-1] += batch[f"{group}_attention_mask"].sum()
        counts = self.accelerator.reduce(counts, reduction="sum")
        self._num_tokens += int(counts[-1].item())
        return {
            **{f"{g}_tokens": counts[2 * i] for i, g in enumerate(groups)},
            **{f"{g}_sequences": counts[2 * i + 1] for i, g in enumerate(groups)},
        }

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # Each process holds a share of the global mean; DDP averages gradients over processes.
        self._normalizers, self._loss_scale = num_items_in_batch, self.accelerator.num_processes
        self._step_logps = {}
        try:
            loss = self.check_finite(self._compute_loss(model, inputs))
        finally:
            self._step_logps = None
        return (loss, {}) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        metrics = {key: sum(values) / len(values) for key, values in self._metrics[mode].items() if values}
        if mode == "eval":
            metrics = {f"eval_{key}": value for key, value in metrics.items()}
        else:
            metrics["num_tokens"] = self._num_tokens
        logs.update(metrics)
        super().log(logs, start_time)
        self._metrics[mode].clear()
