"""FLAT: unlearning with only forget data, by loss adjustment through an f-divergence.

Wang et al., "LLM Unlearning via Loss Adjustment with Only Forget Data", ICLR 2025 (arXiv 2410.11143).

For a forget question x with forget answer y_f and a template answer y_e (a refusal such as "I don't know", or an
alternative answer), let P_e and P_f be the average per-token probabilities of the two answers. FLAT maximises the
f-divergence between the template and the forget answer in its variational form, i.e. minimises

    L = −g*(P_e) + f*(g*(P_f))

with the activation g* and the conjugate f* of the chosen divergence:

    divergence          g*(v)                      f*(u)
    kl                  v                          e^(u − 1)
    js (Jensen-Shannon) log 2 − log(1 + e^(−v))    −log(2 − e^u)
    pearson (χ²)        v                          u²/4 + u
    tv (total var.)     ½·tanh(v)                  u

The first term raises the template answer, the second lowers the forget answer; the divergence sets how the two are
weighted. No retain data and no reference model are used.

Which divergence: the paper derives the loss for any f-divergence (its Table 2 gives g* and f* for each); its official
code's TOFU configuration (`config/forget.yaml`, `variants: Total-Variation`), the file the training defaults below come
from, runs total variation, so total variation is the default here too. Which divergence each of the paper's result
tables used could not be checked here.

Two ways of averaging token probabilities are offered, because the paper and its code differ:
- `per_answer` (the paper's, default): P is the mean over each answer's own tokens, L is computed per example and
  averaged over the batch;
- `padded_batch` (the official code's): P is the sum of the batch's answer-token probabilities divided by every
  position of the padded batch (prompt and padding positions count as zero), and L is computed once on these scalars.
  Its scale depends on the padded length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .base import UnlearningConfig, UnlearningTrainer

# divergence -> (activation g*, conjugate f*)
DIVERGENCES = {
    "kl": (lambda v: v, lambda u: torch.exp(u - 1)),
    "js": (lambda v: math.log(2) - F.softplus(-v), lambda u: -torch.log(2 - torch.exp(u))),
    "pearson": (lambda v: v, lambda u: u.square() / 4 + u),
    "tv": (lambda v: 0.5 * torch.tanh(v), lambda u: u),
}
# The official code's TOFU configuration (config/forget.yaml: `variants: Total-Variation`), like the training defaults.
DEFAULT_DIVERGENCE = "tv"
AVERAGING = ("per_answer", "padded_batch")


def average_probability(logps: torch.Tensor, mask: torch.Tensor, averaging: str = "per_answer") -> torch.Tensor:
    """P, the average token probability of each answer (`per_answer`), or one value over every position of the padded
    batch (`padded_batch`), from per-token log-probabilities and the answer-token mask."""
    probs = logps.exp() * mask
    if averaging == "per_answer":
        return probs.sum(1) / mask.sum(1)
    return probs.sum() / mask.numel()


def flat_terms(
    template_probability: torch.Tensor, forget_probability: torch.Tensor, divergence: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two terms of FLAT's loss, −g*(P_e) and f*(g*(P_f)), for the divergence named."""
    activation, conjugate = DIVERGENCES[divergence]
    return -activation(template_probability), conjugate(activation(forget_probability))


@dataclass
class FLATConfig(UnlearningConfig):
    r"""
    Configuration of [`FLATTrainer`]. Training defaults follow the official TOFU configuration (learning rate 1e-5,
    5 epochs, 16 examples a device with 4 accumulation steps, weight decay 0.01).

    Parameters:
        divergence (`str`, defaults to `"tv"`):
            The f-divergence: `kl`, `js` (Jensen-Shannon), `pearson` (χ²) or `tv` (total variation). Total variation is
            the official code's TOFU configuration; the paper derives the loss for any of them.
        averaging (`str`, defaults to `"per_answer"`):
            `per_answer` averages token probabilities over each answer (the paper); `padded_batch` over every position
            of the padded batch (the official code).
    """

    learning_rate: float = field(default=1e-5, metadata={"help": "Peak learning rate (FLAT's TOFU setting)."})
    num_train_epochs: float = field(default=5.0, metadata={"help": "Epochs over the forget set (FLAT's TOFU setting)."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Forget examples a batch on each device."})
    divergence: str = field(
        default=DEFAULT_DIVERGENCE, metadata={"help": "The f-divergence.", "choices": sorted(DIVERGENCES)}
    )
    averaging: str = field(
        default="per_answer",
        metadata={"help": "per_answer (the paper) or padded_batch (the official code).", "choices": list(AVERAGING)},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.divergence not in DIVERGENCES:
            raise ValueError(f"--divergence {self.divergence!r} is not one of {sorted(DIVERGENCES)}.")
        if self.averaging not in AVERAGING:
            raise ValueError(f"--averaging {self.averaging!r} is not one of {list(AVERAGING)}.")


class FLATTrainer(UnlearningTrainer):
    """FLAT on a preference-form forget set: prompt, chosen (the template answer y_e), rejected (the forget answer)."""

    config_class = FLATConfig
    forget_data = "preference"
    forget_groups = {"forget": "rejected", "template": "chosen"}
    _name = "FLAT"
    _tag_names = ["rlunlearn", "unlearning", "flat"]
    _paper = {"title": "LLM Unlearning via Loss Adjustment with Only Forget Data", "id": "2410.11143"}

    def _compute_loss(self, model, inputs):
        p_template = average_probability(*self.completion_logps(model, inputs, "template"), self.args.averaging)
        p_forget = average_probability(*self.completion_logps(model, inputs, "forget"), self.args.averaging)
        template_term, forget_term = flat_terms(p_template, p_forget, self.args.divergence)
        for name, value in (
            ("prob_template", p_template),
            ("prob_forget", p_forget),
            ("template_term", template_term),
            ("forget_term", forget_term),
        ):
            self.log_metric(name, value)
        per_example = template_term + forget_term
        if self.args.averaging == "padded_batch":
            # One value for the batch: weight it by the batch's size, like the per-example means of other methods.
            per_example = per_example.expand(inputs["forget_input_ids"].size(0))
        return self.sequence_mean(per_example, "forget")
