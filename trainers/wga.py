"""Weighted gradient ascent (WGA): gradient ascent whose tokens weigh by the model's confidence in them.

Wang, Zhou, Zhou, Shin, Han, Weinberger, "Rethinking LLM Unlearning Objectives: A Gradient Perspective and Go Beyond"
(ICLR 2025, arXiv 2502.19301); open-unlearning's `WGA`. With T_f the answer tokens of the forget batch and
p_t = π_θ(y_t | x, y_<t),

    L = γ · (1/|T_f|) Σ_{t ∈ T_f} sg(p_t)^β · log p_t  +  α · R

sg the stop-gradient (the weight is a constant of each step) and R the retain term (NLL by default). Gradient ascent
pushes hardest on the tokens already unlikely (its gradient in the logit of y_t does not vanish as p_t → 0, so it keeps
pulling the answer down after it is forgotten); the weight p_t^β moves that push to the tokens the model still
predicts, and fades as they are forgotten. β = 1, γ = α = 1, and 5 epochs at 1e-5, the paper's TOFU settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .base import RetainRegularizedConfig, UnlearningTrainer
from .utils import mean_answer_logp


def wga_token_loss(logps: torch.Tensor, beta: float) -> torch.Tensor:
    """WGA's loss per answer token, sg(p)^β · log p, from the tokens' log-probabilities."""
    return (beta * logps.detach()).exp() * logps


@dataclass
class WGAConfig(RetainRegularizedConfig):
    r"""
    Configuration of [`WGATrainer`].

    Parameters:
        beta (`float`, defaults to `1.0`):
            β, the power of each token's probability in its weight (0 gives plain gradient ascent).
        learning_rate (`float`, defaults to `1e-5`), num_train_epochs (`float`, defaults to `5`):
            The paper's TOFU settings.
    """

    beta: float = field(default=1.0, metadata={"help": "β, the power of each token's probability in its weight."})
    num_train_epochs: float = field(default=5.0, metadata={"help": "Epochs over the forget set (the paper's 5)."})

    def __post_init__(self):
        super().__post_init__()
        if self.beta < 0:
            raise ValueError(f"--beta is {self.beta}; WGA needs β >= 0.")


class WGATrainer(UnlearningTrainer):
    """WGA: forget set as `train_dataset` (prompt/completion), a `retain_dataset` for the retain term."""

    config_class = WGAConfig
    _name = "WGA"
    _tag_names = ["rlunlearn", "unlearning", "wga"]
    _paper = {
        "title": "Rethinking LLM Unlearning Objectives: A Gradient Perspective and Go Beyond",
        "id": "2502.19301",
    }

    def _compute_loss(self, model, inputs):
        logps, mask = self.completion_logps(model, inputs, "forget")
        self.log_metric("forget_prob", mean_answer_logp(logps, mask).exp())
        weighted = wga_token_loss(logps, self.args.beta)
        loss = self.args.forget_weight * self.token_mean(weighted, mask, "forget", name="wga_loss")
        if self.args.retain_weight > 0:
            loss = loss + self.args.retain_weight * self.retain_term(model, inputs, self.args.retain_loss_type)
        return loss
