"""Batched forward passes and generation (greedy, or sampled for the extraction probe): the raw material of every
metric.

Answers are tokenised exactly as the trainers tokenise them (`rlunlearn.trainers.utils.tokenize_pair`), so a probability
measured here is the probability the training loss saw. Examples are sorted by length before batching so that
padding stays small, and come back in their original order. A prompt is run once and its KV cache reused: by every
answer scored after it, and by each generated token.
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


# Answers whose log-softmax is taken in one call: fewer calls than one an answer (their overhead outweighs the
# arithmetic on small models), and a bounded float32 copy of the logits on large vocabularies (16 answers of 200
# tokens over 128k tokens: 1.6 GB).
LOG_SOFTMAX_ROWS = 16


@dataclass
class TokenScores:
    """Teacher-forced statistics of one answer, one value per answer token (the final EOS included).

    `logps`: log-probability of the token. Where asked for (`score_answers`'s `statistics`): `is_top1`, whether it is
    the model's most likely next token, and `mu` and `var`, the mean and variance of the log-probability under the
    model's next-token distribution (Min-K%++); `None` otherwise.
    """

    logps: np.ndarray
    is_top1: np.ndarray | None = None
    mu: np.ndarray | None = None
    var: np.ndarray | None = None

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


def _prompt_pass(model, prompts: list[list[int]], pad_id: int):
    """One forward pass over left-padded prompts: the KV cache, each prompt's next-token logits, the prompts' attention
    mask and each prompt's length (the position of the first token after it)."""
    input_ids, attention_mask = _padded(prompts, pad_id, left=True)
    input_ids, attention_mask = input_ids.to(model.device), attention_mask.to(model.device)
    # Positions count the prompt's own tokens, so that padding does not shift them.
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    output = model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True, logits_to_keep=1
    )
    return output.cache, output.logits[:, -1], attention_mask, attention_mask.sum(-1)


def _distribution_statistics(logps: torch.Tensor, targets: torch.Tensor) -> dict[str, np.ndarray]:
    """`is_top1`, `mu` and `var` of one answer's tokens from the log-softmax of the logits that predict them, (length,
    vocabulary)."""
    probs = logps.exp()
    mu = (probs * logps).sum(-1)
    return {
        "is_top1": (logps.argmax(-1) == targets).cpu().numpy(),
        "mu": mu.double().cpu().numpy(),
        "var": ((probs * logps.square()).sum(-1) - mu.square()).double().cpu().numpy(),
    }


@torch.no_grad()
def score_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str | list],
    answers: Sequence[str | list],
    batch_size: int = 64,
    desc: str | None = None,
    statistics: bool | Sequence[bool] = True,
) -> list[TokenScores]:
    """Teacher-forced `TokenScores` of each answer given its prompt.

    Answers that share a prompt (a question's true, paraphrased and perturbed answers) share one forward pass over it:
    its KV cache is copied to each answer, which is then scored from the cache. About `batch_size` answers a pass.
    `statistics` (one flag, or one per answer) says which answers also get `is_top1`, `mu` and `var`: they read the
    whole next-token distribution at each token, which costs more than the log-probabilities themselves."""
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers.")
    wants_statistics = [statistics] * len(answers) if isinstance(statistics, bool) else list(statistics)
    if len(wants_statistics) != len(answers):
        raise ValueError(f"{len(wants_statistics)} statistics flags but {len(answers)} answers.")
    pairs = [tokenize_pair(tokenizer, p, a) for p, a in zip(prompts, answers)]
    if any(not prompt_ids for prompt_ids, _ in pairs):
        raise ValueError(
            "An empty prompt leaves nothing to predict an answer's first token from: give each answer a prompt, or "
            "use a tokenizer that adds a BOS token."
        )
    # The prompt part of a pair is where its two tokenisations diverge, so it is compared as tokens, not as text.
    answers_of_prompt: dict[tuple[int, ...], list[int]] = {}
    for i, (prompt_ids, _) in enumerate(pairs):
        answers_of_prompt.setdefault(tuple(prompt_ids), []).append(i)
    # Prompts with answers of similar lengths together, about `batch_size` answers a pass.
    groups = sorted(answers_of_prompt.items(), key=lambda group: max(len(pairs[i][1]) for i in group[1]))
    batches, size = [], 0
    for group in groups:
        if not batches or size + len(group[1]) > batch_size:
            batches.append([])
            size = 0
        batches[-1].append(group)
        size += len(group[1])

    results: list[TokenScores | None] = [None] * len(pairs)
    was_training = model.training
    model.eval()
    for batch in tqdm(batches, desc=desc, leave=False, disable=desc is None):
        cache, first_logits, prompt_mask, prompt_lengths = _prompt_pass(
            model, [list(prompt_ids) for prompt_ids, _ in batch], tokenizer.pad_token_id
        )
        rows = [i for _, members in batch for i in members]
        prompt_of_row = torch.tensor([g for g, (_, members) in enumerate(batch) for _ in members], device=model.device)
        cache.reorder_cache(prompt_of_row)
        answer_ids, answer_mask = _padded([pairs[i][1] for i in rows], tokenizer.pad_token_id, left=False)
        answer_ids, answer_mask = answer_ids.to(model.device), answer_mask.to(model.device)
        logits = model(
            input_ids=answer_ids,
            attention_mask=torch.cat([prompt_mask[prompt_of_row], answer_mask], dim=1),
            position_ids=prompt_lengths[prompt_of_row, None] + torch.arange(answer_ids.size(1), device=model.device),
            cache=cache,
            use_cache=True,
        ).logits
        # The prompt's last position predicts the first answer token; answer position t predicts token t + 1.
        first_logps = torch.log_softmax(first_logits.float(), dim=-1)  # a row per prompt
        for start in range(0, len(rows), LOG_SOFTMAX_ROWS):
            chunk = slice(start, start + LOG_SOFTMAX_ROWS)
            answer_logps = torch.log_softmax(logits[chunk, :-1].float(), dim=-1)
            first_token = first_logps[prompt_of_row[chunk], answer_ids[chunk, 0]]
            later_tokens = answer_logps.gather(-1, answer_ids[chunk, 1:, None]).squeeze(-1)
            token_logps = torch.cat([first_token[:, None], later_tokens], dim=1).double().cpu().numpy()
            for offset, i in enumerate(rows[chunk]):
                length, prompt = len(pairs[i][1]), prompt_of_row[start + offset]
                details = {}
                if wants_statistics[i]:
                    predicting = torch.cat([first_logps[prompt, None], answer_logps[offset, : length - 1]])
                    details = _distribution_statistics(predicting, answer_ids[start + offset, :length])
                results[i] = TokenScores(token_logps[offset, :length], **details)
    model.train(was_training)
    return results


def gradient_norms(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str | list],
    answers: Sequence[str | list],
    p: float = 2.0,
    desc: str | None = None,
) -> np.ndarray:
    """Per answer, the gradient-norm attack's score (Wang et al., "Pandora's White-Box", arXiv 2402.17012;
    open-unlearning's `mia_gradnorm`): the mean over the model's weight tensors of the p-norm of the gradient of the
    answer's mean token loss. Data the model was trained on sits near a minimum, where the gradient is small.

    One example a backward pass. Every floating-point weight takes part (4-bit weights cannot: only the others then),
    in eval mode, dropout off; the model's gradients and its `requires_grad` flags are left as they were."""
    weights = [param for param in model.parameters() if param.is_floating_point()]
    trainable = [param.requires_grad for param in weights]
    was_training = model.training
    model.eval()
    scores = []
    try:
        for param in weights:
            param.requires_grad_(True)
        for prompt, answer in tqdm(list(zip(prompts, answers)), desc=desc, leave=False, disable=desc is None):
            prompt_ids, answer_ids = tokenize_pair(tokenizer, prompt, answer)
            input_ids = torch.tensor([prompt_ids + answer_ids], device=model.device)
            logits = model(input_ids=input_ids, use_cache=False).logits[0, len(prompt_ids) - 1 : -1]
            loss = torch.nn.functional.cross_entropy(logits.float(), input_ids[0, len(prompt_ids) :])
            gradients = torch.autograd.grad(loss, weights, allow_unused=True)
            norms = [gradient.float().norm(p) for gradient in gradients if gradient is not None]
            scores.append(torch.stack(norms).mean().item())
    finally:
        for param, flag in zip(weights, trainable):
            param.requires_grad_(flag)
        model.train(was_training)
    return np.array(scores)


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
    """Greedy continuations of `prompts` (texts, message lists, or token ids), cut at the end-of-sequence token.

    Prompts are batched by length and left-padded; a row leaves its batch at its end-of-sequence token (see
    `_continuations`). The tokens are those of `generate(do_sample=False)` with no logits processor (no repetition
    penalty, whatever the model's generation config says)."""
    prompt_ids = _prompt_ids(tokenizer, prompts)
    generations: list[Generation | None] = [None] * len(prompts)
    was_training = model.training
    model.eval()
    for batch in tqdm(_batches([len(p) for p in prompt_ids], batch_size), desc=desc, leave=False, disable=desc is None):
        continuations = _continuations(
            model, tokenizer, [prompt_ids[i] for i in batch], max_new_tokens, lambda logits, running: logits.argmax(-1)
        )
        for i, tokens in zip(batch, continuations):
            generations[i] = _decoded(tokenizer, tokens)
    model.train(was_training)
    return generations


@torch.no_grad()
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
    cut), from a generator seeded by `seed` (the global random state is left as it was).

    The answers are those of `generate(do_sample=True, num_return_sequences=num_samples, top_k=0)` on the same batches
    of `batch_size // num_samples` prompts (to floating-point rounding), with no logits processor but the temperature
    (whatever the model's generation config says); a row leaves the batch at its end-of-sequence token rather than
    run to the batch's longest answer."""
    prompt_ids = _prompt_ids(tokenizer, prompts)
    generations: list[list[Generation] | None] = [None] * len(prompts)
    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
        torch.manual_seed(seed)
        prompts_a_batch = max(1, batch_size // num_samples)
        for batch in tqdm(
            _batches([len(p) for p in prompt_ids], prompts_a_batch), desc=desc, leave=False, disable=desc is None
        ):
            pick = _multinomial_pick(len(batch) * num_samples, temperature)
            continuations = _continuations(
                model, tokenizer, [prompt_ids[i] for i in batch], max_new_tokens, pick, num_samples
            )
            for row, i in enumerate(batch):
                own = continuations[row * num_samples : (row + 1) * num_samples]
                generations[i] = [_decoded(tokenizer, tokens) for tokens in own]
    model.train(was_training)
    return generations


def _multinomial_pick(rows: int, temperature: float):
    """`_continuations`'s choice of next tokens for a batch of `rows` rows sampled at `temperature`, as `generate`
    samples: a draw for every row of the batch, ended ones too (from any distribution), so that each running row's
    draw takes the random numbers it takes there."""

    def pick(logits: torch.Tensor, running: torch.Tensor) -> torch.Tensor:
        probs = logits.new_ones(rows, logits.size(-1), dtype=torch.float32)
        probs[running] = (logits.float() / temperature).softmax(-1)
        return torch.multinomial(probs, num_samples=1).squeeze(1)[running]

    return pick


def _continuations(
    model, tokenizer, prompts: list[list[int]], max_new_tokens: int, pick, repeats: int = 1
) -> list[list[int]]:
    """The tokens that follow each of a batch of prompts, up to and with its end-of-sequence token: `repeats` rows a
    prompt, which share one pass over it (its KV cache copied to each). `pick(logits, running)` chooses the next token
    of the running rows: `running` says which rows of the batch they are, `logits` holds their next-token logits.

    Written here rather than with `generate`, which keeps every row of a batch until the last one ends: a row leaves
    the batch (and the KV cache) at its end-of-sequence token, so that one long answer does not make the whole batch
    run to it."""
    cache, logits, attention_mask, positions = _prompt_pass(model, prompts, tokenizer.pad_token_id)
    if repeats > 1:
        cache.batch_repeat_interleave(repeats)
        logits, attention_mask, positions = (
            x.repeat_interleave(repeats, 0) for x in (logits, attention_mask, positions)
        )
    tokens: list[list[int]] = [[] for _ in range(len(prompts) * repeats)]
    running = torch.arange(len(tokens), device=model.device)
    for step in range(max_new_tokens):
        next_tokens = pick(logits, running)
        for row, token in zip(running.tolist(), next_tokens.tolist()):
            tokens[row].append(token)
        unfinished = next_tokens != tokenizer.eos_token_id
        if step == max_new_tokens - 1 or not unfinished.any():
            break
        if not unfinished.all():
            cache.batch_select_indices(unfinished)
            running, next_tokens = running[unfinished], next_tokens[unfinished]
            attention_mask, positions = attention_mask[unfinished], positions[unfinished]
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(running), 1)], dim=1)
        logits = model(
            input_ids=next_tokens[:, None],
            attention_mask=attention_mask,
            position_ids=positions[:, None],
            cache=cache,
            use_cache=True,
        ).logits[:, -1]
        positions = positions + 1
    return tokens


def _prompt_ids(tokenizer, prompts) -> list[list[int]]:
    return [p if p and isinstance(p[0], int) else tokenize_prompt(tokenizer, p) for p in prompts]


def _decoded(tokenizer, sequence: list[int]) -> Generation:
    """A generated sequence cut before its first end-of-sequence token, and its text."""
    if tokenizer.eos_token_id in sequence:
        sequence = sequence[: sequence.index(tokenizer.eos_token_id)]
    return Generation(tokenizer.decode(sequence, skip_special_tokens=True).strip(), sequence)
