"""RMU (representation misdirection for unlearning): steer one layer's activations on forget data toward a random
direction, and keep them on retain data where the frozen model has them.

Li et al., "The WMDP Benchmark: Measuring and Reducing Malicious Use With Unlearning" (ICML 2024, arXiv 2403.03218),
section 5 and its code (github.com/centerforaisafety/wmdp, `rmu/unlearn.py`); open-unlearning's `RMU`. With h_θ(t) the
output of decoder layer ℓ at token t, h_frozen(t) the same under the model before unlearning, u a random unit vector
(uniform in [0, 1)^d, normalised, fixed for the run) and d the hidden size,

    L = (1/|T_f|) Σ_{t ∈ T_f} ‖h_θ(t) − c·u‖² / d  +  α · (1/|T_r|) Σ_{t ∈ T_r} ‖h_θ(t) − h_frozen(t)‖² / d

Only the parameters of layers ℓ−2, ℓ−1 and ℓ are updated (of their MLP's down projection, as the paper's code does;
under LoRA, the adapter's weights in those layers), so the layers above ℓ keep reading activations that now carry
noise on forget data. Defaults: the paper's Zephyr-7B setting, ℓ = 7, c = 6.5, α = 1200, learning rate 5e-5. c and α
depend on the model's activation scale (the paper uses c = 300, α = 1600 for Mixtral): tune them with ℓ. The frozen
model is the base with the adapter disabled under LoRA, else a frozen copy.

Departures from the paper: with question/answer data, T_f and T_r are the answers' tokens (open-unlearning's choice;
the paper steers every token of forget documents and keeps every token of retain text), and the training length is
this library's epochs over the forget set (the paper: 150 batches of 4 documents).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from accelerate.utils import is_peft_model

from .base import UnlearningConfig, UnlearningTrainer


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The model's stack of decoder layers: the module list as long as its `num_hidden_layers`."""
    count = model.config.get_text_config().num_hidden_layers
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count:
            return module
    raise ValueError(f"RMU found no list of {count} decoder layers in {type(model).__name__}.")


def steering_vector(hidden_size: int, coefficient: float, seed: int) -> torch.Tensor:
    """c·u: u uniform in [0, 1)^d and normalised, drawn from `seed` (the same on every process and on resume)."""
    direction = torch.rand(hidden_size, generator=torch.Generator().manual_seed(seed))
    return coefficient * direction / direction.norm()


def activation_distance(activations: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """‖h − target‖² / d at each token: (batch, length, d) against a (d,) vector or (batch, length, d) activations."""
    return (activations.float() - targets.float()).pow(2).mean(-1)


@dataclass
class RMUConfig(UnlearningConfig):
    r"""
    Configuration of [`RMUTrainer`].

    Parameters:
        rmu_layer (`int`, defaults to `7`):
            ℓ, the decoder layer (counted from 0) whose output is steered.
        rmu_update_layers (`list[int]`, *optional*):
            The layers whose parameters are updated; defaults to ℓ−2, ℓ−1, ℓ (the paper's). None may lie above ℓ.
        rmu_update_module (`str`, defaults to `"mlp.down_proj"`):
            Within those layers, the module whose parameters are updated (the paper's MLP down projection); `""`
            updates every parameter of the layers. Ignored under LoRA, where the adapter's weights in those layers
            are updated.
        steering_coeff (`float`, defaults to `6.5`):
            c, the norm of the target activation.
        alpha (`float`, defaults to `1200.0`):
            α, the weight of the retain term; 0 drops it (and the need for retain data).
        learning_rate (`float`, defaults to `5e-5`):
            The paper's rate.
    """

    rmu_layer: int = field(default=7, metadata={"help": "ℓ, the decoder layer (from 0) whose output is steered."})
    rmu_update_layers: list[int] | None = field(
        default=None, metadata={"help": "Layers whose parameters are updated (default: ℓ-2, ℓ-1, ℓ)."}
    )
    rmu_update_module: str = field(
        default="mlp.down_proj",
        metadata={"help": "Module of those layers whose parameters are updated ('' for all; ignored under LoRA)."},
    )
    steering_coeff: float = field(default=6.5, metadata={"help": "c, the norm of the target activation."})
    alpha: float = field(default=1200.0, metadata={"help": "α, the weight of the retain term (0 drops it)."})
    learning_rate: float = field(default=5e-5, metadata={"help": "Peak learning rate (the paper's 5e-5)."})

    def __post_init__(self):
        super().__post_init__()
        if self.rmu_layer < 0:
            raise ValueError(f"--rmu_layer is {self.rmu_layer}; give a decoder layer, counted from 0.")
        if self.rmu_update_layers is None:
            self.rmu_update_layers = list(range(max(0, self.rmu_layer - 2), self.rmu_layer + 1))
        if not self.rmu_update_layers or not all(0 <= layer <= self.rmu_layer for layer in self.rmu_update_layers):
            raise ValueError(
                f"--rmu_update_layers {self.rmu_update_layers}: give layers from 0 to --rmu_layer {self.rmu_layer} "
                "(layers above it cannot move its activations)."
            )
        if self.steering_coeff <= 0 or self.alpha < 0:
            raise ValueError(
                f"--steering_coeff {self.steering_coeff} must be above 0 and --alpha {self.alpha} 0 or more."
            )


class RMUTrainer(UnlearningTrainer):
    """RMU: forget set as `train_dataset` (prompt/completion), a `retain_dataset` for the retain term."""

    config_class = RMUConfig
    _name = "RMU"
    _tag_names = ["rlunlearn", "unlearning", "rmu"]
    _paper = {
        "title": "The WMDP Benchmark: Measuring and Reducing Malicious Use With Unlearning",
        "id": "2403.03218",
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.check_model_config(self.args, self.model.config)
        layers = decoder_layers(self.model)
        self._freeze_all_but_update_layers(layers)
        # Layer ℓ of the policy and of the frozen model (the same module under LoRA, whose reference is the policy
        # with its adapter off), found once: the loss hooks them in every step.
        frozen = layers if self.ref_model is None else decoder_layers(self.accelerator.unwrap_model(self.ref_model))
        self._steered_layer = {False: layers[self.args.rmu_layer], True: frozen[self.args.rmu_layer]}
        self._steering = steering_vector(
            self.model.config.get_text_config().hidden_size, self.args.steering_coeff, self.args.seed
        )

    @classmethod
    def needs_retain(cls, args):
        return args.alpha > 0

    @classmethod
    def check_model_config(cls, args, model_config):
        count = model_config.get_text_config().num_hidden_layers
        if args.rmu_layer >= count:
            raise ValueError(f"--rmu_layer {args.rmu_layer}: the model has {count} decoder layers (0 to {count - 1}).")

    @classmethod
    def needs_reference(cls, args):
        return args.alpha > 0

    def _freeze_all_but_update_layers(self, layers: torch.nn.ModuleList) -> None:
        """Leave trainable only the parameters RMU updates: `rmu_update_module` of the update layers, or, under LoRA,
        the adapter's weights there."""
        lora = is_peft_model(self.model)
        self.model.requires_grad_(False)
        prefix = self.args.rmu_update_module
        chosen = []
        for layer in self.args.rmu_update_layers:
            for name, param in layers[layer].named_parameters():
                if (lora and "lora_" in name) or (not lora and (not prefix or name.startswith(prefix + "."))):
                    param.requires_grad_(True)
                    chosen.append(name)
        if not chosen:
            what = "LoRA weights" if lora else f"parameters under --rmu_update_module {prefix!r}"
            raise ValueError(
                f"RMU found no {what} in layers {self.args.rmu_update_layers}: give a module of those layers, or LoRA "
                "target modules there."
            )

    def layer_activations(self, model, inputs: dict[str, torch.Tensor], group: str, reference: bool = False):
        """The output of layer ℓ at every token of `group`, (batch, length, d); with `reference=True`, under the model
        before unlearning and without gradient."""
        captured = []

        def keep(module, args, output):
            captured.append(output[0] if isinstance(output, tuple) else output)

        context = self.reference_model() if reference else contextlib.nullcontext(model)
        with context as forward_model:
            handle = self._steered_layer[reference].register_forward_hook(keep)
            try:
                # One logit is enough: the loss reads only layer ℓ.
                forward_model(
                    input_ids=inputs[f"{group}_input_ids"],
                    attention_mask=inputs[f"{group}_attention_mask"],
                    use_cache=False,
                    logits_to_keep=1,
                )
            finally:
                handle.remove()
        return captured[0]

    def _compute_loss(self, model, inputs):
        forget = self.layer_activations(model, inputs, "forget")
        forget_mask = inputs["forget_completion_mask"].float()
        steering = self._steering.to(forget.device)
        forget_distance = activation_distance(forget, steering)
        self.log_metric(
            "forget_cosine_to_target",
            torch.nn.functional.cosine_similarity(forget.float(), steering, dim=-1)[forget_mask.bool()],
        )
        loss = self.token_mean(forget_distance, forget_mask, "forget", name="forget_distance")
        if self.args.alpha > 0:
            retain = self.layer_activations(model, inputs, "retain")
            frozen = self.layer_activations(model, inputs, "retain", reference=True)
            retain_distance = activation_distance(retain, frozen)
            retain_mask = inputs["retain_completion_mask"].float()
            loss = loss + self.args.alpha * self.token_mean(
                retain_distance, retain_mask, "retain", name="retain_distance"
            )
        return loss
