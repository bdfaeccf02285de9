"""Gradient difference (GradDiff): gradient ascent on the forget set, descent on the retain set.

Liu et al., "Continual Learning and Private Unlearning" (CoLLAs 2022, arXiv 2203.12817); open-unlearning's
`GradDiff`. With T_f and T_r the answer tokens of the forget and retain batches,

    L = γ · (1/|T_f|) Σ_{T_f} log π_θ(y_t | ·)  +  α · R,    R = (1/|T_r|) Σ_{T_r} −log π_θ(y_t | ·)   (retain NLL)
                                                           or R = (1/|T_r|) Σ_{T_r} KL(π_ref ‖ π_θ)   (retain KL)

with γ = α = 1 and the NLL retain term by default.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import RetainRegularizedConfig, UnlearningTrainer
from .utils import mean_answer_logp


@dataclass
class GradDiffConfig(RetainRegularizedConfig):
    r"""
    Configuration of [`GradDiffTrainer`]: γ (`forget_weight`), α (`retain_weight`) and the retain term
    (`retain_loss_type`, `nll` or `kl`), open-unlearning's defaults 1, 1 and `nll`.
    """


class GradDiffTrainer(UnlearningTrainer):
    """Gradient difference: forget set as `train_dataset` (prompt/completion) and a `retain_dataset`."""

    config_class = GradDiffConfig
    _name = "GradDiff"
    _tag_names = ["rlunlearn", "unlearning", "graddiff"]
    _paper = {"title": "Continual Learning and Private Unlearning", "id": "2203.12817"}

    def _compute_loss(self, model, inputs):
        logps, mask = self.completion_logps(model, inputs, "forget")
        self.log_metric("forget_prob", mean_answer_logp(logps, mask).exp())
        loss = self.args.forget_weight * self.token_mean(logps, mask, "forget", name="forget_logp")
        if self.args.retain_weight > 0:
            loss = loss + self.args.retain_weight * self.retain_term(model, inputs, self.args.retain_loss_type)
        return loss
