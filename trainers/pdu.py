"""PDU: unlearning as a constrained problem, solved by primal-dual descent-ascent.

Entesari, Hatami, Khaziev, Ramakrishna, Fazlyab, "Constrained Entropic Unlearning: A Primal-Dual Framework for Large
Language Models" (arXiv 2506.05314); open-unlearning's `PDU`, contributed by the authors. The problem is

    min_θ  L_f(θ) = (1/|T_f|) Σ_{t ∈ T_f} ( max_v z_{t,v} − mean_v z_{t,v} )²     subject to  R(θ) <= ε

z_t the logits before each forget answer token (the logit-margin flattening loss: zero when the next-token
distribution is uniform, softmax-free, and its gradient does not vanish near the optimum) and R the retain NLL. Its
Lagrangian, minimised in θ and maximised in the dual variable λ >= 0:

    L = γ · L_f + λ · (R − ε),        after each optimizer step  λ ← max(0, λ + η · (R̄ − ε))

R̄ the retain loss of that step's batches. While the retain loss stays under ε, λ shrinks and forgetting dominates;
above it, λ grows until retention wins. λ starts at `retain_weight` and is held for the first `dual_warmup_epochs`.
Defaults of the paper's TOFU runs (open-unlearning's `community/methods/PDU`): γ = 1, λ₀ = 100, η = 5, ε = 0.3, 5
warm-up epochs, 10 epochs at 1e-5. ε is model-specific (the authors: a little above the retain loss before
unlearning); `retain_loss_tolerance` sets it that way, ε = (1 + tolerance) · R(θ₀), the paper's natural choice. λ and
ε are saved in checkpoints, so a resumed run goes on with them.

Departures from open-unlearning's code: the flattening loss is read at the logits that predict the answer tokens (as
every loss here; open-unlearning reads the logits at the answer tokens, one position later), and λ is updated once
per optimizer step from the global batch's retain loss (open-unlearning: after each micro-batch, from its own).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from .base import RetainRegularizedConfig, UnlearningTrainer


def logit_margin(logits: torch.Tensor) -> torch.Tensor:
    """The logit-margin flattening loss at each position, (max_v z_v − mean_v z_v)², from logits (..., vocabulary)."""
    return (logits.max(-1).values - logits.mean(-1)) ** 2


@dataclass
class PDUConfig(RetainRegularizedConfig):
    r"""
    Configuration of [`PDUTrainer`].

    Parameters:
        retain_weight (`float`, defaults to `100.0`):
            λ₀, the dual variable's starting value (the paper's TOFU runs; the flattening loss is large).
        retain_loss_epsilon (`float`, defaults to `0.3`):
            ε, the bound on the retain loss (the paper's TOFU value for its Llama models).
        retain_loss_tolerance (`float`, *optional*):
            Set ε to (1 + this) times the retain loss of the model before unlearning, measured over the whole retain
            set at the first step, instead of `retain_loss_epsilon`.
        dual_step_size (`float`, defaults to `5.0`):
            η, the dual variable's step.
        dual_warmup_epochs (`float`, defaults to `5.0`):
            Epochs during which λ stays at λ₀.
    """

    retain_weight: float = field(default=100.0, metadata={"help": "λ₀, the dual variable's starting value."})
    retain_loss_epsilon: float = field(default=0.3, metadata={"help": "ε, the bound on the retain loss."})
    retain_loss_tolerance: float | None = field(
        default=None,
        metadata={"help": "Set ε to (1 + this) x the retain loss before unlearning, instead of --retain_loss_epsilon."},
    )
    dual_step_size: float = field(default=5.0, metadata={"help": "η, the dual variable's step."})
    dual_warmup_epochs: float = field(default=5.0, metadata={"help": "Epochs during which λ stays at λ₀."})
    # λ and ε live in a callback whose state checkpoints keep; transformers restores it only when asked.
    restore_callback_states_from_checkpoint: bool = field(
        default=True, metadata={"help": "Resume with the checkpoint's λ and ε (and other callbacks' states)."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.retain_loss_epsilon < 0 or (self.retain_loss_tolerance is not None and self.retain_loss_tolerance < 0):
            raise ValueError(
                f"--retain_loss_epsilon {self.retain_loss_epsilon} and --retain_loss_tolerance "
                f"{self.retain_loss_tolerance}: the bound on the retain loss cannot be negative."
            )
        if self.dual_step_size < 0 or self.dual_warmup_epochs < 0:
            raise ValueError(
                f"--dual_step_size {self.dual_step_size} and --dual_warmup_epochs {self.dual_warmup_epochs} must be 0 "
                "or more."
            )


class DualAscent(TrainerCallback, ExportableState):
    """PDU's dual variable λ and bound ε: λ takes a projected ascent step after each optimizer step, from the retain
    loss of the step's batches. Saved in checkpoints (transformers restores it on resume)."""

    def __init__(self, dual: float, step_size: float, warmup_epochs: float, epsilon: float | None):
        self.dual, self.step_size, self.warmup_epochs, self.epsilon = dual, step_size, warmup_epochs, epsilon
        self._retain_total = self._retain_count = 0.0

    def observe(self, total: float, count: float) -> None:
        """Add a micro-batch's retain loss (summed over its tokens on all processes) and its token count."""
        self._retain_total += total
        self._retain_count += count

    def on_step_end(self, args, state, control, **kwargs):
        if self._retain_count and state.epoch > self.warmup_epochs:
            violation = self._retain_total / self._retain_count - self.epsilon
            self.dual = max(0.0, self.dual + self.step_size * violation)
        self._retain_total = self._retain_count = 0.0

    def state(self) -> dict:
        return {
            "args": {
                "dual": self.dual,
                "step_size": self.step_size,
                "warmup_epochs": self.warmup_epochs,
                "epsilon": self.epsilon,
            },
            "attributes": {},
        }


class PDUTrainer(UnlearningTrainer):
    """PDU: forget set as `train_dataset` (prompt/completion) and a `retain_dataset`, whose loss is the constraint."""

    config_class = PDUConfig
    _name = "PDU"
    _tag_names = ["rlunlearn", "unlearning", "pdu"]
    full_logit_groups = ("forget",)
    _paper = {
        "title": "Constrained Entropic Unlearning: A Primal-Dual Framework for Large Language Models",
        "id": "2506.05314",
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        epsilon = None if self.args.retain_loss_tolerance is not None else self.args.retain_loss_epsilon
        self.add_callback(
            DualAscent(self.args.retain_weight, self.args.dual_step_size, self.args.dual_warmup_epochs, epsilon)
        )

    @classmethod
    def needs_retain(cls, args):
        return True

    @property
    def dual_ascent(self) -> DualAscent:
        """The dual variable's callback (a resumed run replaces it with the checkpoint's)."""
        return next(cb for cb in self.callback_handler.callbacks if isinstance(cb, DualAscent))

    def _starting_retain_loss(self) -> float:
        """The retain loss of the model as it is, over the whole retain set (every process scores all of it)."""
        total = count = 0.0
        with torch.no_grad():
            for batch in self.whole_set_batches(self.retain_sampler.dataset, "retain", "completion"):
                values, mask = self.retain_values(self.model, batch, self.args.retain_loss_type)
                total, count = total + (values * mask).sum().item(), count + mask.sum().item()
        return total / count

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        dual = self.dual_ascent
        if dual.epsilon is None:  # measured before the first step's passes, outside its cache of log-probabilities
            dual.epsilon = (1 + self.args.retain_loss_tolerance) * self._starting_retain_loss()
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def _compute_loss(self, model, inputs):
        dual = self.dual_ascent
        logits, mask = self.answer_logits(model, inputs, "forget")
        self.log_answer_probability(logits, mask, inputs, "forget")
        forget = self.token_mean(logit_margin(logits), mask, "forget", name="logit_margin")

        values, retain_mask = self.retain_values(model, inputs, self.args.retain_loss_type)
        retain = self.token_mean(values, retain_mask, "retain", name=f"retain_{self.args.retain_loss_type}")
        totals = self.accelerator.gather(torch.stack([(values.detach() * retain_mask).sum(), retain_mask.sum()])[None])
        dual.observe(*totals.sum(0).tolist())
        self.log_metric("dual", torch.tensor(dual.dual))
        self.log_metric("retain_loss_epsilon", torch.tensor(dual.epsilon))
        return self.args.forget_weight * forget + dual.dual * retain
