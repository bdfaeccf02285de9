"""SimNPO: reference-free NPO with length-normalised log-probabilities and a margin.

Fan, Liu, Lin, Jia, Zhang, Mei, Liu, "Simplicity Prevails: Rethinking Negative Preference Optimization for LLM
Unlearning" (arXiv 2410.07163); open-unlearning's `SimNPO`.

    L = γ · mean_i [ −(2/β) · log σ( −(β/|y_f,i|) · log π_θ(y_f,i | x_i) − δ ) ]  +  α · R

|y| the number of answer tokens, δ the margin (the paper's γ), R the retain NLL. Defaults from the paper's TOFU
setting: β = 4.5, δ = 0, forget weight γ = 0.125, α = 1. open-unlearning writes the margin inside the β factor
(σ(β·(… − δ))); the two agree at the default δ = 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn.functional as F

from .base import RetainRegularizedConfig, UnlearningTrainer
from .utils import mean_answer_logp


@dataclass
class SimNPOConfig(RetainRegularizedConfig):
    r"""
    Configuration of [`SimNPOTrainer`].

    Parameters:
        beta (`float`, defaults to `4.5`):
            β, the inverse temperature.
        delta (`float`, defaults to `0.0`):
            δ, the reward margin (γ in the SimNPO paper).
        forget_weight (`float`, defaults to `0.125`):
            The weight of the SimNPO term (`npo_coeff` of the paper's TOFU configuration).
    """

    beta: float = field(default=4.5, metadata={"help": "β, the inverse temperature."})
    delta: float = field(default=0.0, metadata={"help": "δ, the reward margin (γ in the SimNPO paper)."})
    forget_weight: float = field(
        default=0.125, metadata={"help": "Weight of the SimNPO term (the paper's TOFU value)."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.beta <= 0:
            raise ValueError(f"--beta is {self.beta}; SimNPO needs β > 0.")


class SimNPOTrainer(UnlearningTrainer):
    """SimNPO: forget set as `train_dataset` (prompt/completion), a `retain_dataset` for the retain term."""

    config_class = SimNPOConfig
    _name = "SimNPO"
    _tag_names = ["rlunlearn", "unlearning", "simnpo"]
    _paper = {
        "title": "Simplicity Prevails: Rethinking Negative Preference Optimization for LLM Unlearning",
        "id": "2410.07163",
    }

    def _compute_loss(self, model, inputs):
        beta = self.args.beta
        logps, mask = self.completion_logps(model, inputs, "forget")
        mean_logps = mean_answer_logp(logps, mask)
        self.log_metric("forget_prob", mean_logps.exp())
        simnpo = -(2 / beta) * F.logsigmoid(-beta * mean_logps - self.args.delta)
        loss = self.args.forget_weight * self.sequence_mean(simnpo, "forget", name="simnpo_loss")
        if self.args.retain_weight > 0:
            loss = loss + self.args.retain_weight * self.retain_term(model, inputs, self.args.retain_loss_type)
        return loss
