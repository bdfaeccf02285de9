"""SatImp: gradient ascent reweighted per token by saturation and importance.

Yang, Wang, Huang, Liu, Zhang, Han, "Exploring Criteria of Loss Reweighting to Enhance LLM Unlearning" (ICML 2025,
arXiv 2505.11953); open-unlearning's `SatImp`, contributed by the authors. With T_f the answer tokens of the forget
batch and p_t = π_θ(y_t | x, y_<t),

    L = γ · (1/|T_f|) Σ_{t ∈ T_f} sg(p_t)^β1 · (1 − sg(p_t))^β2 · log p_t  +  α · R

sg the stop-gradient and R the retain term (NLL by default). The saturation weight p^β1 (the weight of WGA) puts the
ascent on tokens the model still predicts, the importance weight (1 − p)^β2 on the tokens that are not already near
certain (the template words every answer shares). β1 = 5, β2 = 1, forget weight γ = 1 and retain weight α = 0.1 (the
paper's forget-to-retain ratio of 10, which open-unlearning's README gives), 5 epochs at 1e-5.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .base import RetainRegularizedConfig, UnlearningTrainer
from .utils import mean_answer_logp


def satimp_token_loss(logps: torch.Tensor, beta1: float, beta2: float) -> torch.Tensor:
    """SatImp's loss per answer token, sg(p)^β1 · (1 − sg(p))^β2 · log p, from the tokens' log-probabilities."""
    probability = logps.detach().exp()
    return probability**beta1 * (1 - probability) ** beta2 * logps


@dataclass
class SatImpConfig(RetainRegularizedConfig):
    r"""
    Configuration of [`SatImpTrainer`].

    Parameters:
        beta1 (`float`, defaults to `5.0`):
            β1, the power of the saturation weight p.
        beta2 (`float`, defaults to `1.0`):
            β2, the power of the importance weight 1 − p.
        retain_weight (`float`, defaults to `0.1`):
            α, the weight of the retain term (forget to retain 10 : 1, the paper's ratio).
        learning_rate (`float`, defaults to `1e-5`), num_train_epochs (`float`, defaults to `5`):
            The paper's TOFU settings.
    """

    beta1: float = field(default=5.0, metadata={"help": "β1, the power of the saturation weight p."})
    beta2: float = field(default=1.0, metadata={"help": "β2, the power of the importance weight 1 − p."})
    retain_weight: float = field(default=0.1, metadata={"help": "α, the weight of the retain term (the paper's 0.1)."})
    num_train_epochs: float = field(default=5.0, metadata={"help": "Epochs over the forget set (the paper's 5)."})

    def __post_init__(self):
        super().__post_init__()
        if self.beta1 < 0 or self.beta2 < 0:
            raise ValueError(f"--beta1 {self.beta1} and --beta2 {self.beta2}: SatImp's powers must be 0 or more.")


class SatImpTrainer(UnlearningTrainer):
    """SatImp: forget set as `train_dataset` (prompt/completion), a `retain_dataset` for the retain term."""

    config_class = SatImpConfig
    _name = "SatImp"
    _tag_names = ["rlunlearn", "unlearning", "satimp"]
    _paper = {"title": "Exploring Criteria of Loss Reweighting to Enhance LLM Unlearning", "id": "2505.11953"}

    def _compute_loss(self, model, inputs):
        logps, mask = self.completion_logps(model, inputs, "forget")
        self.log_metric("forget_prob", mean_answer_logp(logps, mask).exp())
        weighted = satimp_token_loss(logps, self.args.beta1, self.args.beta2)
        loss = self.args.forget_weight * self.token_mean(weighted, mask, "forget", name="satimp_loss")
        if self.args.retain_weight > 0:
            loss = loss + self.args.retain_weight * self.retain_term(model, inputs, self.args.retain_loss_type)
        return loss
