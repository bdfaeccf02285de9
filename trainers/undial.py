"""UNDIAL: self-distillation toward the model's own next-token distribution with the forget token's logit lowered.

Dong, Lin, Belkin, Huerta, Vulić, "UNDIAL: Self-Distillation with Adjusted Logits for Robust Unlearning in Large
Language Models" (NAACL 2025, arXiv 2402.10052); open-unlearning's `UNDIAL`. With z_t the reference model's logits
before answer token y_t (the model before unlearning: the teacher) and e_y the one-hot vector of y_t,

    q_t = softmax(z_t − β · e_{y_t})                                  the teacher with the forget token lowered
    L = γ · (1/|T_f|) Σ_{t ∈ T_f} CE(q_t, π_θ(· | x, y_<t))  +  α · R

The student is pulled toward a fixed target that differs from what it knew only at the forgotten token, whose
probability falls by a factor of about e^β; the rest of the distribution keeps its shape. So the loss is bounded and
its optimum is a model that still speaks fluently: no gradient ascent. β = 10 (the value open-unlearning's TOFU
configuration uses; the paper searches 3, 10, 30), γ = 1, α = 0 (the paper uses no retain set), 10 epochs at 1e-4 (the
paper's rate, with LoRA rank 8).

Departure from open-unlearning's code: the loss is the mean over the answer tokens; open-unlearning averages over every
position of the padded sequence, question and padding included.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .base import RetainRegularizedConfig, UnlearningTrainer


def undial_targets(reference_logits: torch.Tensor, tokens: torch.Tensor, beta: float) -> torch.Tensor:
    """The teacher's adjusted distribution softmax(z − β·e_y) at each position, from the reference logits
    (..., vocabulary) and the tokens y (...)."""
    lowered = beta * F.one_hot(tokens, reference_logits.size(-1)).to(reference_logits.dtype)
    return (reference_logits - lowered).softmax(-1)


@dataclass
class UNDIALConfig(RetainRegularizedConfig):
    r"""
    Configuration of [`UNDIALTrainer`].

    Parameters:
        beta (`float`, defaults to `10.0`):
            β, how far the forget token's logit is lowered in the teacher's distribution.
        retain_weight (`float`, defaults to `0.0`):
            α: the paper distils on the forget set alone; above 0 adds the retain term.
        learning_rate (`float`, defaults to `1e-4`):
            The paper's rate (with LoRA).
    """

    beta: float = field(default=10.0, metadata={"help": "β, how far the forget token's logit is lowered."})
    retain_weight: float = field(default=0.0, metadata={"help": "α, the retain term's weight (the paper: none)."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate (the paper's 1e-4)."})

    def __post_init__(self):
        super().__post_init__()
        if self.beta <= 0:
            raise ValueError(f"--beta is {self.beta}; UNDIAL needs β > 0.")


class UNDIALTrainer(UnlearningTrainer):
    """UNDIAL: forget set as `train_dataset` (prompt/completion); the teacher is the model before unlearning."""

    config_class = UNDIALConfig
    _name = "UNDIAL"
    _tag_names = ["rlunlearn", "unlearning", "undial"]
    full_logit_groups = ("forget",)
    _paper = {
        "title": "UNDIAL: Self-Distillation with Adjusted Logits for Robust Unlearning in Large Language Models",
        "id": "2402.10052",
    }

    @classmethod
    def needs_reference(cls, args):
        return True

    def _compute_loss(self, model, inputs):
        logits, mask = self.answer_logits(model, inputs, "forget")
        reference_logits, _ = self.answer_logits(model, inputs, "forget", reference=True)
        self.log_answer_probability(logits, mask, inputs, "forget")
        targets = undial_targets(reference_logits, inputs["forget_input_ids"][:, 1:], self.args.beta)
        cross_entropy = -(targets * logits.log_softmax(-1)).sum(-1)
        loss = self.args.forget_weight * self.token_mean(cross_entropy, mask, "forget", name="undial_loss")
        if self.args.retain_weight > 0:
            loss = loss + self.args.retain_weight * self.retain_term(model, inputs, self.args.retain_loss_type)
        return loss
