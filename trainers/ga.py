"""Gradient ascent (GA): raise the loss of the forget answers.

Jang et al., "Knowledge Unlearning for Mitigating Privacy Risks in Language Models" (ACL 2023, arXiv 2210.01504);
open-unlearning's `GradAscent`. With T_f the answer tokens of the forget batch,

    L_GA = (1/|T_f|) Σ_{t ∈ T_f} log π_θ(y_t | x, y_<t)

i.e. the negative of the usual next-token loss, minimised: the forget answers become less likely. GA alone has no
force that keeps the rest of the model; it is the baseline every other method improves on.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import UnlearningConfig, UnlearningTrainer
from .utils import mean_answer_logp


@dataclass
class GAConfig(UnlearningConfig):
    r"""
    Configuration of [`GATrainer`]. GA has no hyperparameter of its own: see [`UnlearningConfig`] for the
    optimisation defaults (open-unlearning's TOFU recipe).
    """


class GATrainer(UnlearningTrainer):
    """Gradient ascent on the forget set (`train_dataset`, prompt/completion)."""

    config_class = GAConfig
    _name = "GA"
    _tag_names = ["rlunlearn", "unlearning", "ga"]
    _paper = {"title": "Knowledge Unlearning for Mitigating Privacy Risks in Language Models", "id": "2210.01504"}

    def _compute_loss(self, model, inputs):
        logps, mask = self.completion_logps(model, inputs, "forget")
        self.log_metric("forget_prob", mean_answer_logp(logps, mask).exp())
        return self.token_mean(logps, mask, "forget", name="forget_logp")
