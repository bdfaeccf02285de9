"""CE-U (cross-entropy unlearning): the cross-entropy toward the model's own distribution with the forget token removed.

Yang, "CE-U: Cross Entropy Unlearning" (arXiv 2503.01224); open-unlearning's `CEU`. With z_t the model's logits
before answer token y_t,

    q_t = softmax(sg(z_t) with z_{t, y_t} = −∞)                      the model's own distribution without y_t
    L = (1/|T|) Σ_{t ∈ T} CE(q_t, softmax(z_t))

sg the stop-gradient, T the forget answers' tokens but the first `ignore_first_answer_tokens` of each answer. The
gradient in the logits, softmax(z_t) − q_t, lowers y_t by its probability p_t and raises every other token in
proportion to its own: the learning signal of the usual cross-entropy with the sign of the target's term reversed,
bounded where gradient ascent's is not, and vanishing as p_t → 0. Only forget data; 10 epochs at 1e-5
(open-unlearning's TOFU recipe) and the first answer token ignored (the paper's footnote: that token is often one every
answer starts with, which unlearning it would break).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .base import UnlearningConfig, UnlearningTrainer


def ceu_token_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """CE-U's loss at each position, CE(q, softmax(z)) with q = softmax(sg(z) without the token y), from the logits
    (..., vocabulary) and the tokens y (...)."""
    targets = logits.detach().scatter(-1, tokens.unsqueeze(-1), float("-inf")).softmax(-1)
    return -(targets * logits.log_softmax(-1)).sum(-1)


@dataclass
class CEUConfig(UnlearningConfig):
    r"""
    Configuration of [`CEUTrainer`]. CE-U reads only forget data.

    Parameters:
        ignore_first_answer_tokens (`int`, defaults to `1`):
            The first tokens of each answer left out of the loss (the paper's 1).
    """

    ignore_first_answer_tokens: int = field(
        default=1, metadata={"help": "The first tokens of each answer left out of the loss (the paper's 1)."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.ignore_first_answer_tokens < 0:
            raise ValueError(f"--ignore_first_answer_tokens is {self.ignore_first_answer_tokens}; give 0 or more.")


class CEUTrainer(UnlearningTrainer):
    """CE-U: forget set as `train_dataset` (prompt/completion), nothing else."""

    config_class = CEUConfig
    _name = "CE-U"
    _tag_names = ["rlunlearn", "unlearning", "ceu"]
    full_logit_groups = ("forget",)
    _paper = {"title": "CE-U: Cross Entropy Unlearning", "id": "2503.01224"}

    def _sampled_groups(self, batch, step, micro_step):
        # The first answer tokens leave the forget mask before the batch's tokens are counted, so that the loss is the
        # mean over the tokens it reads.
        mask = batch["forget_completion_mask"]
        first = (mask.cumsum(1) <= self.args.ignore_first_answer_tokens) & mask.bool()
        return {
            **super()._sampled_groups(batch, step, micro_step),
            "forget_completion_mask": mask.masked_fill(first, 0),
        }

    def _compute_loss(self, model, inputs):
        logits, mask = self.answer_logits(model, inputs, "forget")
        self.log_answer_probability(logits, mask, inputs, "forget")
        tokens = inputs["forget_input_ids"][:, 1:]
        return self.token_mean(ceu_token_loss(logits, tokens), mask, "forget", name="ceu_loss")
