"""Batched forward passes and generation (greedy, or sampled for the extraction probe): the raw material of every
metric.

Answers are tokenised exactly as the trainers tokenise them (`rlunlearn.trainers.utils.tokenize_pair`), so a probability
measured here is the probability the training loss saw. Examples are sorted by length before batching so that
padding stays small, and come back in their original order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlunlearn.trainers.utils import tokenize_pair, tokenize_prompt


@dataclass(frozen=True)
class EvalSettings:
    """How answers are generated and scored. TOFU generates greedily, at most 200 new tokens."""

    max_new_tokens: int = 200
    batch_size: int = 64


@dataclass
class TokenScores:
    """Teacher-forced statistics of one answer, one value per answer token (the final EOS included).

    `logps`: log-probability of the token; `is_top1`: whether it is the model's most likely next token; `mu` and
    `var`: mean and variance of the log-probability under the model's next-token distribution (Min-K%++).
    """

    logps: np.ndarray
    is_top1: np.ndarray
    mu: np.ndarray
    var: np.ndarray

    @property
    def mean_logp(self) -> float:
        return float(self.logps.mean())


def _batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _padded(sequences: list[list[int]], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, ids in enumerate(sequences):
        span = slice(width - len(ids), width) if left else slice(0, len(ids))
        input_ids[row, span] = torch.tensor(ids)
        attention_mask[row, span] = 1
    return input_ids, attention_mask


@torch.no_grad()
def score_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str | list],
    answers: Sequence[str | list],
    batch_size: int = 64,
    desc: str | None = None,
) -> list[TokenScores]:
    """Teacher-forced `TokenScores` of each answer given its prompt."""
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers.")
    pairs = [tokenize_pair(tokenizer, p, a) for p, a in zip(prompts, answers)]
    results: list[TokenScores | None] = [None] * len(pairs)
    was_training = model.training
    model.eval()
    batches = _batches([len(p) + len(c) for p, c in pairs], batch_size)
    for batch in tqdm(batches, desc=desc, leave=False, disable=desc is None):
        input_ids, attention_mask = _padded(
            [pairs[i][0] + pairs[i][1] for i in batch], tokenizer.pad_token_id, left=False
        )
        logits = model(
            input_ids=input_ids.to(model.device), attention_mask=attention_mask.to(model.device), use_cache=False
        ).logits
        for row, i in enumerate(batch):
            start, length = len(pairs[i][0]), len(pairs[i][1])
            # Position t predicts token t + 1; one row at a time keeps (length x vocabulary) memory small.
            logps = torch.log_softmax(logits[row, start - 1 : start - 1 + length].float(), dim=-1)
            targets = input_ids[row, start : start + length].to(logps.device)
            probs = logps.exp()
            mu = (probs * logps).sum(-1)
            results[i] = TokenScores(
                logps=logps.gather(-1, targets[:, None]).squeeze(-1).double().cpu().numpy(),
                is_top1=(logps.argmax(-1) == targets).cpu().numpy(),
                mu=mu.double().cpu().numpy(),
                var=((probs * logps.square()).sum(-1) - mu.square()).double().cpu().numpy(),
            )
    model.train(was_training)
    return results


@dataclass
class Generation:
    text: str
    token_ids: list[int]


@torch.no_grad()
def generate_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str | list | list[int]],
    max_new_tokens: int = 200,
    batch_size: int = 64,
    desc: str | None = None,
) -> list[Generation]:
    """Greedy continuations of `prompts` (texts, message lists, or token ids), left-padded in batches and cut at
    the end-of-sequence token."""
    return [samples[0] for samples in _generate(model, tokenizer, prompts, max_new_tokens, batch_size, desc)]


def sample_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str | list],
    num_samples: int,
    temperature: float = 1.0,
    max_new_tokens: int = 200,
    batch_size: int = 64,
    seed: int = 0,
    desc: str | None = None,
) -> list[list[Generation]]:
    """`num_samples` answers to each prompt, sampled at `temperature` from the whole distribution (no top-k or top-p
    cut), from a generator seeded by `seed` (the global random state is left as it was)."""
    with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
        torch.manual_seed(seed)
        return _generate(
            model,
            tokenizer,
            prompts,
            max_new_tokens,
            max(1, batch_size // num_samples),
            desc,
            do_sample=True,
            temperature=temperature,
            top_k=0,
            top_p=1.0,
            num_return_sequences=num_samples,
        )


def _generate(model, tokenizer, prompts, max_new_tokens, batch_size, desc, **sampling) -> list[list[Generation]]:
    """Continuations of each prompt (one, or `num_return_sequences`), in batches of similar length."""
    per_prompt = sampling.get("num_return_sequences", 1)
    prompt_ids = [p if p and isinstance(p[0], int) else tokenize_prompt(tokenizer, p) for p in prompts]
    generations: list[list[Generation] | None] = [None] * len(prompts)
    was_training = model.training
    model.eval()
    for batch in tqdm(_batches([len(p) for p in prompt_ids], batch_size), desc=desc, leave=False, disable=desc is None):
        input_ids, attention_mask = _padded([prompt_ids[i] for i in batch], tokenizer.pad_token_id, left=True)
        output = model.generate(
            input_ids=input_ids.to(model.device),
            attention_mask=attention_mask.to(model.device),
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            **{"do_sample": False, **sampling},
        )
        for row, i in enumerate(batch):
            generations[i] = []
            for sequence in output[row * per_prompt : (row + 1) * per_prompt, input_ids.shape[1] :].tolist():
                if tokenizer.eos_token_id in sequence:
                    sequence = sequence[: sequence.index(tokenizer.eos_token_id)]
                generations[i].append(
                    Generation(tokenizer.decode(sequence, skip_special_tokens=True).strip(), sequence)
                )
    model.train(was_training)
    return generations
