"""Pieces the unlearning trainers share: tokenising prompt/answer pairs, collating groups of sequences, and drawing
retain batches per process."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from accelerate.utils import parse_flag_from_env
from datasets import Dataset
from transformers import PreTrainedTokenizerBase, TrainingArguments
from trl.data_utils import common_prefix_length
from trl.import_utils import is_vllm_available
from trl.trainer.utils import pad


class TrainingGuardError(RuntimeError):
    """A guard stopped training; the last good weights are saved."""


class NonFiniteLossError(TrainingGuardError):
    """The loss became NaN or infinite; training stops before the step is applied."""


class RetainCollapseError(TrainingGuardError):
    """The retain probability fell below `retain_probability_floor`."""


def bf16_default() -> bool:
    """bf16 where the hardware has it (a recent GPU), fp32 elsewhere: TRL's bf16=True default fails on a CPU."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def can_pin_memory() -> bool:
    """Pinned host memory speeds copies to an accelerator; without one, each DataLoader that asks for it warns."""
    return torch.accelerator.is_available()


def multiprocess_cpu() -> bool:
    """Whether this is one of several processes (torchrun, `accelerate launch`) on a machine without a GPU: such a run
    must set `use_cpu` so that accelerate joins the processes over gloo, or each would train alone on its own copy."""
    return not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1


def sharding_engine(args: TrainingArguments) -> str | None:
    """The engine that shards the model over the processes of the run, "DeepSpeed" or "FSDP", named in the training
    arguments or in `accelerate launch`'s config; None for one process or data parallelism."""
    if args.deepspeed_plugin is not None:
        return "DeepSpeed"
    if args.fsdp or parse_flag_from_env("ACCELERATE_USE_FSDP"):
        return "FSDP"
    return None


def check_vllm(args) -> None:
    """vLLM generation (`use_vllm`) needs vLLM and a CUDA GPU: say so before any model loads."""
    if args.use_vllm and not (is_vllm_available() and torch.cuda.is_available()):
        raise ValueError(
            "--use_vllm: generating with vLLM needs vLLM installed (`pip install vllm`) and a CUDA GPU; leave "
            "--use_vllm off to generate with transformers."
        )


def gathered(param: torch.nn.Parameter, modifier_rank: int | None = None):
    """A context in which a parameter that DeepSpeed ZeRO-3 partitions over the processes is whole on each (every
    process must enter it); what `modifier_rank` writes to it there is kept. Any other parameter is left as it is."""
    if not hasattr(param, "ds_id"):
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters([param], modifier_rank=modifier_rank)


def keep_4bit_trainable_on_cpu(model: torch.nn.Module) -> None:
    """Stop bitsandbytes from repacking 4-bit weights into its CPU inference layout.

    On a CPU, the first forward of a `Linear4bit` in eval mode without gradients repacks its weights for a faster
    inference kernel that has no backward; every later training step then silently gets no gradient. Evaluation or
    generation before or during training (Trainer.evaluate, RL rollouts) triggers it, so trainers turn it off.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def mean_answer_logp(logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each answer's mean log-probability per token, from per-token log-probabilities and the answer-token mask; its
    exp is the answer probability the trainers log (TOFU's probability)."""
    return (logps * mask).sum(1) / mask.sum(1)


def pack_sequences(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Padding-free form of a right-padded batch: its tokens in one row (1, tokens), position ids that restart at 0 with
    each sequence (transformers reads the sequences' boundaries from them), and, for each place of the padded batch,
    the index of its token in that row (0 on padding, whose values the masks drop)."""
    real = attention_mask.bool()
    lengths = real.sum(1)
    starts = lengths.cumsum(0) - lengths
    places = torch.arange(input_ids.size(1), device=input_ids.device)
    positions = places.expand_as(input_ids)[real]
    index = torch.where(real, starts[:, None] + places, 0)
    return input_ids[real][None], positions[None], index


def cast_trainable_to_bf16(model: torch.nn.Module) -> None:
    """QLoRA keeps the adapters of a quantised model in bf16 (Dettmers et al., 2023), as TRL does."""
    for param in model.parameters():
        if param.requires_grad:
            param.data = param.data.to(torch.bfloat16)


def remove_fused_lm_head(model: torch.nn.Module) -> torch.nn.Module:
    """Undo TRL's `add_fused_lm_head` (which SFTTrainer and DPOTrainer apply): it binds a patched `forward` to the
    instance, closing over the original model, so a deep copy of a patched model would still compute with the
    original's weights. Dropping the instance attribute restores the class's forward."""
    vars(model).pop("forward", None)
    return model


def tokenize_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str | list) -> list[int]:
    """Token ids of a prompt as the model sees it before answering (chat template with the generation prompt)."""
    if isinstance(prompt, list):
        return tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)[
            "input_ids"
        ]
    return tokenizer(prompt)["input_ids"]


def tokenize_pair(
    tokenizer: PreTrainedTokenizerBase, prompt: str | list, completion: str | list
) -> tuple[list[int], list[int]]:
    """Token ids of a prompt and of its completion, as TRL's SFT and DPO trainers make them.

    Plain text: the prompt alone, and prompt + completion + EOS; conversational (lists of messages): the chat template
    with and without the generation prompt. The completion starts where the two tokenisations diverge, so tokens that
    merge across the boundary are counted once.
    """
    prompt_ids = tokenize_prompt(tokenizer, prompt)
    if isinstance(prompt, list):
        full_ids = tokenizer.apply_chat_template(prompt + completion, tokenize=True, return_dict=True)["input_ids"]
    else:
        eos = tokenizer.eos_token or ""
        text = prompt + completion
        full_ids = tokenizer(text if text.endswith(eos) else text + eos)["input_ids"]
    split = common_prefix_length(prompt_ids, full_ids)
    return full_ids[:split], full_ids[split:]


def tokenize_completions(
    dataset: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    completion_columns: Sequence[str],
    max_length: int | None,
    name: str,
    num_proc: int | None = None,
) -> Dataset:
    """Add `prompt_ids` and `<column>_ids` for each completion column, truncated to `max_length` from the end.

    Examples whose prompt alone fills `max_length` keep no completion token and are dropped; an error names the
    dataset if none is left.
    """
    missing = [c for c in ("prompt", *completion_columns) if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"The {name} dataset lacks column(s) {missing}; it has {dataset.column_names}. Build it with "
            "rlunlearn.data (sft_dataset for prompt/completion, preference_dataset for prompt/chosen/rejected)."
        )
    if len(dataset) == 0:
        raise ValueError(f"The {name} dataset is empty: there is nothing to train on.")

    def tokenize(example):
        output = {}
        for column in completion_columns:
            prompt_ids, completion_ids = tokenize_pair(tokenizer, example["prompt"], example[column])
            if max_length is not None:
                completion_ids = completion_ids[: max(0, max_length - len(prompt_ids))]
            output["prompt_ids"] = prompt_ids
            output[f"{column}_ids"] = completion_ids
        return output

    tokenized = dataset.map(tokenize, num_proc=num_proc, desc=f"Tokenizing the {name} dataset")
    kept = tokenized.filter(lambda ex: all(len(ex[f"{c}_ids"]) > 0 for c in completion_columns))
    if len(kept) == 0:
        raise ValueError(
            f"Every prompt of the {name} dataset is at least max_length={max_length} tokens long, leaving no answer "
            "token to train on: raise --max_length."
        )
    return kept


@dataclass
class ActivationCheckpointingOff:
    """Config fields that leave activation checkpointing off unless asked for: TRL's configs turn it on through
    `gradient_checkpointing`, which transformers 5 renamed `activation_checkpointing`. Left unset, the old name raises
    no deprecation warning. Small models train faster without it, and its weights are the same."""

    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Deprecated alias of --activation_checkpointing."}
    )
    activation_checkpointing: bool | None = field(
        default=False, metadata={"help": "Recompute activations in the backward pass (saves memory on large models)."}
    )


@dataclass
class GroupCollator:
    """Collates tokenised examples into named groups of right-padded sequences.

    `groups` maps a group name to the completion column it takes, e.g. {"forget": "completion"} or
    {"forget": "rejected", "chosen": "chosen"}. Each group gives `<group>_input_ids`, `<group>_attention_mask` and
    `<group>_completion_mask` (1 on the answer tokens, the only ones any loss reads).
    """

    pad_token_id: int
    groups: dict[str, str]

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        # The examples' places in their dataset, for values computed once per example (the reference's log-probs).
        batch = {"index": torch.tensor([ex["index"] for ex in examples])} if "index" in examples[0] else {}
        for group, column in self.groups.items():
            batch.update(
                self.collate_group(
                    group, [ex["prompt_ids"] for ex in examples], [ex[f"{column}_ids"] for ex in examples]
                )
            )
        return batch

    def collate_group(
        self, group: str, prompts: list[list[int]], completions: list[list[int]]
    ) -> dict[str, torch.Tensor]:
        input_ids = [torch.tensor(p + c) for p, c in zip(prompts, completions)]
        completion_mask = [torch.tensor([0] * len(p) + [1] * len(c)) for p, c in zip(prompts, completions)]
        return {
            f"{group}_input_ids": pad(input_ids, padding_value=self.pad_token_id, padding_side="right"),
            f"{group}_attention_mask": pad(
                [torch.ones_like(ids) for ids in input_ids], padding_value=0, padding_side="right"
            ),
            f"{group}_completion_mask": pad(completion_mask, padding_value=0, padding_side="right"),
        }


def with_example_index(dataset: Dataset) -> Dataset:
    """`dataset` with an `index` column: each example's row, which batches carry (see `GroupCollator`)."""
    return dataset.add_column("index", list(range(len(dataset))))


class RetainSampler:
    """Draws examples of the retain set for this process.

    The generator is seeded by (seed, stream, process rank, optimisation step, micro-step), so processes draw
    different examples, separate streams (retain batches, LLMU's random answers) are independent, and a run resumed from
    a checkpoint draws exactly what an uninterrupted run would have drawn.
    """

    def __init__(self, dataset: Dataset, collator: GroupCollator, batch_size: int, seed: int, rank: int):
        if batch_size < 1:
            raise ValueError(f"retain_batch_size={batch_size}: draw at least one retain example per batch.")
        self.dataset = dataset
        self.collator = collator
        self.batch_size = min(batch_size, len(dataset))
        self.seed = seed
        self.rank = rank

    def indices(self, step: int, micro_step: int, count: int | None = None, stream: str = "retain") -> list[int]:
        """`count` (default: the batch size) distinct examples while the set lasts, then it starts over."""
        key = hashlib.sha256(f"{self.seed}/{stream}/{self.rank}/{step}/{micro_step}".encode()).digest()
        generator = torch.Generator().manual_seed(int.from_bytes(key[:8], "little"))
        count = self.batch_size if count is None else count
        rounds = -(-count // len(self.dataset))
        order = torch.cat([torch.randperm(len(self.dataset), generator=generator) for _ in range(rounds)])
        return order[:count].tolist()

    def draw(self, step: int, micro_step: int, group: str = "retain") -> dict[str, torch.Tensor]:
        """A collated batch of retain examples (their own prompts and answers)."""
        rows = self.dataset.select(self.indices(step, micro_step))
        return self.collator.collate_group(group, rows["prompt_ids"], rows["completion_ids"])

    def completions(self, step: int, micro_step: int, count: int, stream: str) -> list[list[int]]:
        """Token ids of `count` retain answers, without their prompts."""
        return self.dataset.select(self.indices(step, micro_step, count, stream))["completion_ids"]
