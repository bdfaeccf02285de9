"""Negative Preference Optimization (NPO): DPO's loss with the forget answer as the only, rejected, response.

Zhang, Lin, Bai, Mei, "Negative Preference Optimization: From Catastrophic Collapse to Effective Unlearning"
(COLM 2024, arXiv 2404.05868); open-unlearning's `NPO`. With sequence-summed log-probabilities,

    L = γ · mean_i [ −(2/β) · log σ( −β · (log π_θ(y_f,i | x_i) − log π_ref(y_f,i | x_i)) ) ]  +  α · R

R the retain term (NLL by default, or KL to the reference). β = 0.1, γ = α = 1. The reference is the model before
unlearning: the base with the adapter disabled under LoRA. NPO's loss is bounded where gradient ascent's is not: once
the forget answer is much less likely than under the reference, its gradient vanishes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .base import RetainRegularizedConfig, UnlearningTrainer


def npo_loss(log_ratio: torch.Tensor, beta: float) -> torch.Tensor:
    """NPO's loss per sequence, −(2/β)·log σ(−β·log_ratio), from the log-ratio log π_θ(y|x) − log π_ref(y|x)."""
    return -(2 / beta) * F.logsigmoid(-beta * log_ratio)


@dataclass
class NPOConfig(RetainRegularizedConfig):
    r"""
    Configuration of [`NPOTrainer`].

    Parameters:
        beta (`float`, defaults to `0.1`):
            β, the inverse temperature of the log-ratio (the paper's and open-unlearning's value).
    """

    beta: float = field(default=0.1, metadata={"help": "β, the inverse temperature of the log-ratio."})

    def __post_init__(self):
        super().__post_init__()
        if self.beta <= 0:
            raise ValueError(f"--beta is {self.beta}; NPO needs β > 0.")


class NPOTrainer(UnlearningTrainer):
    """NPO: forget set as `train_dataset` (prompt/completion), a `retain_dataset` for the retain term."""

    config_class = NPOConfig
    _name = "NPO"
    _tag_names = ["rlunlearn", "unlearning", "npo"]
    _paper = {
        "title": "Negative Preference Optimization: From Catastrophic Collapse to Effective Unlearning",
        "id": "2404.05868",
    }

    @classmethod
    def needs_reference(cls, args):
        return True

    def _compute_loss(self, model, inputs):
        log_ratio = self.log_ratio(model, inputs, "forget")
        self.log_metric("forget_log_ratio", log_ratio)
        npo = npo_loss(log_ratio, self.args.beta)
        loss = self.args.forget_weight * self.sequence_mean(npo, "forget", name="npo_loss")
        if self.args.retain_weight > 0:
            loss = loss + self.args.retain_weight * self.retain_term(model, inputs, self.args.retain_loss_type)
        return loss
