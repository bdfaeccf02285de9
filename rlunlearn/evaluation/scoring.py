"""Batched forward passes and greedy generation: the raw material of every metric.

Answers are tokenised exactly as the trainers tokenise them (`trainers.utils.tokenize_pair`), so a probability
measured here is the probability the training loss saw. Examples are sorted by length before batching so that
padding stays small, and returned in their original order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from trainers.utils import tokenize_pair, tokenize_prompt


def _batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@torch.no_grad()
def score_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str | list],
    answers: Sequence[str | list],
    batch_size: int = 64,
    desc: str | None = None,
) -> list[np.ndarray]:
    """Per-token log-probabilities of each answer given its prompt (one float64 array an example)."""
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers.")
    pairs = [tokenize_pair(tokenizer, p, a) for p, a in zip(prompts, answers)]
    results: list[np.ndarray | None] = [None] * len(pairs)
    device = model.device
    was_training = model.training
    model.eval()
    batches = _batches([len(p) + len(c) for p, c in pairs], batch_size)
    for batch in tqdm(batches, desc=desc or "Scoring answers", leave=False, disable=not desc):
        width = max(len(pairs[i][0]) + len(pairs[i][1]) for i in batch)
        input_ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            ids = pairs[i][0] + pairs[i][1]
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention_mask[row, : len(ids)] = 1
        logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), use_cache=False).logits
        # Position t predicts token t + 1.
        logps = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        token_logps = logps.gather(-1, input_ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1).cpu().double()
        for row, i in enumerate(batch):
            start, length = len(pairs[i][0]), len(pairs[i][1])
            results[i] = token_logps[row, start - 1 : start - 1 + length].numpy()
    model.train(was_training)
    return results


@torch.no_grad()
def generate_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str | list],
    max_new_tokens: int = 200,
    batch_size: int = 64,
    desc: str | None = None,
) -> list[str]:
    """Greedy answers to `prompts`, left-padded in batches and cut at the end-of-sequence token."""
    prompt_ids = [tokenize_prompt(tokenizer, p) for p in prompts]
    answers: list[str | None] = [None] * len(prompts)
    device = model.device
    was_training = model.training
    model.eval()
    for batch in tqdm(
        _batches([len(p) for p in prompt_ids], batch_size), desc=desc or "Generating", leave=False, disable=not desc
    ):
        width = max(len(prompt_ids[i]) for i in batch)
        input_ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            input_ids[row, width - len(prompt_ids[i]) :] = torch.tensor(prompt_ids[i])
            attention_mask[row, width - len(prompt_ids[i]) :] = 1
        output = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        for row, i in enumerate(batch):
            new_tokens = output[row, width:].tolist()
            if tokenizer.eos_token_id in new_tokens:
                new_tokens = new_tokens[: new_tokens.index(tokenizer.eos_token_id)]
            answers[i] = tokenizer.decode(new_tokens, skip_special_tokens=True).strip()
    model.train(was_training)
    return answers
