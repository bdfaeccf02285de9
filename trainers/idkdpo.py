"""IdkDPO: DPO that prefers a refusal ("I don't know") to the forget answer, with a retain term.

Rafailov et al., "Direct Preference Optimization" (NeurIPS 2023, arXiv 2305.18290) applied to unlearning as in TOFU
(Maini et al., 2024) and open-unlearning's `DPO` with IDK answers. With sequence-summed log-probabilities,
y_e the refusal (chosen) and y_f the forget answer (rejected),

    Δ_i = (log π_θ(y_e,i | x_i) − log π_ref(y_e,i | x_i)) − (log π_θ(y_f,i | x_i) − log π_ref(y_f,i | x_i))
    L   = γ · mean_i [ −(2/β) · log σ(β · Δ_i) ]  +  α · R

β = 0.1, γ = α = 1, R the retain NLL. The 2/β factor is open-unlearning's (TRL's DPO loss is −log σ(β·Δ)); it sets
how strongly the preference term weighs against the retain term. Built on the shared unlearning base rather than
TRL's DPOTrainer so that the retain term, its per-process sampling and the global-batch normalisation are those of
the other methods.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn.functional as F

from .base import RetainRegularizedConfig, UnlearningTrainer


@dataclass
class IdkDPOConfig(RetainRegularizedConfig):
    r"""
    Configuration of [`IdkDPOTrainer`].

    Parameters:
        beta (`float`, defaults to `0.1`):
            β, DPO's inverse temperature.
    """

    beta: float = field(default=0.1, metadata={"help": "β, DPO's inverse temperature."})

    def __post_init__(self):
        super().__post_init__()
        if self.beta <= 0:
            raise ValueError(f"--beta is {self.beta}; DPO needs β > 0.")


class IdkDPOTrainer(UnlearningTrainer):
    """IdkDPO on a preference-form forget set (prompt, chosen = refusal, rejected = forget answer) and a retain set."""

    config_class = IdkDPOConfig
    forget_data = "preference"
    forget_groups = {"forget": "rejected", "refusal": "chosen"}
    _name = "IdkDPO"
    _tag_names = ["rlunlearn", "unlearning", "idkdpo"]
    _paper = {
        "title": "Direct Preference Optimization: Your Language Model is Secretly a Reward Model",
        "id": "2305.18290",
    }

    @classmethod
    def needs_reference(cls, args):
        return True

    def _compute_loss(self, model, inputs):
        beta = self.args.beta
        margin = self.log_ratio(model, inputs, "refusal") - self.log_ratio(model, inputs, "forget")
        self.log_metric("reward_margin", beta * margin)
        dpo = -(2 / beta) * F.logsigmoid(beta * margin)
        loss = self.args.forget_weight * self.sequence_mean(dpo, "forget", name="dpo_loss")
        if self.args.retain_weight > 0:
            loss = loss + self.args.retain_weight * self.retain_term(model, inputs, self.args.retain_loss_type)
        return loss
