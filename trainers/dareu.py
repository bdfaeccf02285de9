"""DareU: unlearning as de-attribution, by reinforcement learning.

"De-attribute to Forget for LLM Unlearning" (Lu et al., ICML 2026, arXiv 2605.30919). The policy π_θ answers forget-set
prompts x; an attribution classifier p_φ says whose data each answer y is attributable to, and the reward is high when
it is no longer the forget owners' (see `rewards.AttributionReward`, with the shaping terms beside it):

    max_θ  E_{x ~ D_f, y ~ π_θ(·|x)} [ r(x, y) ]  −  β · KL(π_θ ‖ π_ref)  −  α · R_retain(θ)

    r(x, y)     = Σ_k w_k · r_k(x, y)                      the reward functions and their weights (`reward_weights`)
    R_retain(θ) = mean over retain answer tokens of KL(π_ref ‖ π_θ)   (`retain_loss_type="kl"`; or the NLL, `"nll"`)

π_ref is the model before unlearning: the base with the adapter disabled under LoRA, else a frozen copy. The retain
term is added to the policy loss on every micro-batch, on a retain batch drawn per process (seeded by rank and step).
The policy-gradient estimator is `algorithm`:

- `ppo`: the paper's algorithm, PPO-clip (Schulman et al., 2017, arXiv 1707.06347) with a learned value head on the
  policy's last hidden states. Each rollout batch (`steps_per_generation` micro-batches of prompts, `num_generations`
  answers each) is generated once; its old log-probabilities π_old, old values V_old, rewards and advantages are taken
  then, and the policy and the value head are optimised on it for `num_iterations` epochs (4, as in TRL's former
  PPOTrainer and cleanrl), each epoch `steps_per_generation / gradient_accumulation_steps` minibatches (one optimizer
  step each; 1 by default, as in TRL's former PPOTrainer). Per answer token t, with ρ_t = π_θ(y_t|·) / π_old(y_t|·):

      L_policy = mean_t max( −A_t·ρ_t, −A_t·clip(ρ_t, 1 − ε, 1 + ε) )  +  β · k3(π_ref ‖ π_θ)_t
      L_value  = mean_t ½·max( (V_t − R_t)², (V_old,t + clip(V_t − V_old,t, −ε_v, ε_v) − R_t)² )
      L        = L_policy + `value_coef` · L_value + α · R_retain

  A_t is GAE(γ, λ) over the answer tokens with the reward on the last one, whitened over the batch; R_t = A_t + V_old,t
  (before whitening); ε = `epsilon`, ε_v = `value_clip`; k3(p ‖ q) = p/q − log(p/q) − 1 per token, TRL's KL estimator.
  Logged besides TRL's metrics: `clip_fraction` (share of answer tokens whose ratio lies outside [1 − ε, 1 + ε]; TRL's
  `clip_ratio/region_mean` counts those where the clip changes the objective), `approx_kl` (mean of (ρ − 1) − log ρ,
  an estimate of KL(π_old ‖ π_θ)), `value_clip_fraction` and `value_loss`, each also per epoch of the rollout batch
  (`clip_fraction/epoch_1`, ...). The value head is trained with the policy and dropped when training ends.
  Departures from the reference implementations: the minibatches are cut from the rollout batch once (TRL's buffer),
  not reshuffled every epoch; the KL leash is a loss term as in GRPO, where TRL's former PPOTrainer subtracted it from
  the per-token reward.
- `grpo` (default): TRL's GRPO; advantage = reward minus the mean of the prompt's group of `num_generations`
  completions, scaled by the group's standard deviation (`scale_rewards`), clipped surrogate, β·KL in the loss.
- `rloo`: the leave-one-out baseline of RLOO (Ahmadian et al., 2024): A_i = r_i − mean_{j≠i} r_j over the group,
  unscaled; the rest as in `grpo`.

The classifier (`rlunlearn.attribution`) learns whose each owned answer is, alone and after its question. Departing from
the paper, it can also learn from prefixes and padded copies of the owned answers (`prefix_views`, `padded_views` of
`AttributorConfig`), so that rollouts cut at `max_completion_length`, or padded with unrelated text, stay attributed.

Generation, reward computation, clipping and the β·KL term are TRL's GRPOTrainer's; vLLM generation
(`use_vllm=True`) works where a GPU is present. TRL computes the policy's log-probabilities at the sampling
`temperature` (logits / T); the retain regulariser, `eval_<set>_prob` and the retain-probability guard are computed at
temperature 1, the model's own probabilities. Under `grpo` and `rloo`, when every completion of a prompt gets the same
reward, its advantage is zero and it teaches nothing: TRL logs the share of such groups as `frac_reward_zero_std`, and
this trainer warns when a whole logging window had no reward spread within its groups. Under `ppo` the advantage is the
reward against the value head's estimate, so equal rewards within a group still teach it where they differ between
prompts; it warns when every reward of the window was the same (`reward_std` = 0). Raise `temperature` or
`num_generations`, or check the reward.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

import torch
from accelerate.utils import is_peft_model
from datasets import Dataset
from peft import PeftConfig
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import add_fused_lm_head

from .base import ReferenceAndGuardMixin
from .utils import (
    ActivationCheckpointingOff,
    GroupCollator,
    RetainSampler,
    bf16_default,
    can_pin_memory,
    check_vllm,
    keep_4bit_trainable_on_cpu,
    multiprocess_cpu,
    remove_fused_lm_head,
    tokenize_completions,
)

logger = logging.getLogger(__name__)

ALGORITHMS = ("grpo", "rloo", "ppo")
# Passes over each rollout batch with PPO: TRL's former PPOConfig `num_ppo_epochs` and cleanrl's `update_epochs`.
PPO_EPOCHS = 4


@dataclass
class DareUConfig(ActivationCheckpointingOff, GRPOConfig):
    r"""
    Configuration of [`DareUTrainer`]: TRL's [`GRPOConfig`] (generation, clipping, `num_generations`, `reward_weights`,
    `temperature`, `use_vllm`, ...) and DareU's own fields.

    Provenance: the paper's abstract names reinforcement learning only; its method trains with PPO and adds a
    regulariser on retain data, with values that could not be checked here. The defaults below are TRL's former
    PPOConfig ones where one exists (the PPO epochs, the value loss's weight and clip, GAE's γ and λ), the GRPO paper's
    β, and TRL 1.16's GRPO ones otherwise (the ratio clip ε = 0.2, generation).

    Parameters:
        algorithm (`str`, defaults to `"grpo"`):
            Policy-gradient estimator: `grpo`, `rloo` or `ppo` (the paper's).
        num_iterations (`int`, *optional*):
            Optimisation passes over each rollout batch: PPO's epochs, GRPO's μ. Defaults to 4 with `ppo` (TRL's former
            PPOConfig `num_ppo_epochs` and cleanrl's `update_epochs`) and to 1 otherwise (TRL's GRPO default). With
            `ppo`, `steps_per_generation` (default: `gradient_accumulation_steps`) must be a multiple of
            `gradient_accumulation_steps`: their ratio is the number of minibatches an epoch.
        beta (`float`, defaults to `0.04`):
            β, the weight of the per-token KL to the model before unlearning (the leash); must be > 0. 0.04 is the GRPO
            paper's value (Shao et al., 2024, arXiv 2402.03300) and TRL's former GRPO default, near TRL's former
            PPOConfig `kl_coef` of 0.05; TRL 1.16's GRPO default is 0 (no leash), which DareU does not allow.
        retain_weight (`float`, defaults to `1.0`):
            α, the weight of the retain regulariser; 0 drops it (and the need for retain data).
        retain_loss_type (`str`, defaults to `"kl"`):
            The retain regulariser over the answer tokens of a retain batch: `kl` from the model before unlearning, or
            `nll`.
        retain_batch_size (`int`, *optional*):
            Retain examples for each micro-batch on each process; defaults to `per_device_train_batch_size`.
        retain_probability_floor (`float`, *optional*):
            Stop training when the mean answer probability of the retain eval set (`eval_dataset["retain"]`, at
            `eval_steps`) falls below this, with the weights of the last evaluation above it saved in
            `<output_dir>/last-good`.
        max_length (`int`, defaults to `512`):
            Longest retain prompt + answer in tokens.
        value_coef (`float`, defaults to `0.1`):
            PPO: the weight of the value loss (TRL's former PPOConfig `vf_coef`).
        value_clip (`float`, defaults to `0.2`):
            PPO: how far a new value may move from the old one before the value loss is clipped (`cliprange_value`).
        gamma (`float`, defaults to `1.0`):
            PPO: discount over answer tokens.
        lam (`float`, defaults to `0.95`):
            PPO: λ of generalised advantage estimation.
        bf16 (`bool`, *optional*):
            bf16 mixed precision; defaults to on where a GPU supports it, off on a CPU (TRL's default of on fails
            there).
        activation_checkpointing (`bool`, defaults to `False`):
            Recompute activations in the backward pass: less memory, slower steps (the same weights: the CPU demo's
            DareU model was identical bit for bit, its unlearning about an eighth faster without). TRL's GRPO default
            is on; off here, as in the toolkit's other trainers. Turn it on for large models.
    """

    algorithm: str = field(default="grpo", metadata={"help": "Policy-gradient estimator.", "choices": list(ALGORITHMS)})
    num_iterations: int | None = field(
        default=None,
        metadata={"help": "Optimisation passes (PPO epochs) over each rollout batch (default: 4 with ppo, else 1)."},
    )
    beta: float = field(default=0.04, metadata={"help": "β, the KL leash to the model before unlearning (> 0)."})
    retain_weight: float = field(
        default=1.0, metadata={"help": "α, the weight of the retain regulariser (0 drops it)."}
    )
    retain_loss_type: str = field(
        default="kl",
        metadata={"help": "Retain regulariser: kl to the model before unlearning, or nll.", "choices": ["kl", "nll"]},
    )
    retain_batch_size: int | None = field(
        default=None, metadata={"help": "Retain examples per micro-batch per process (default: the batch size)."}
    )
    max_length: int = field(default=512, metadata={"help": "Longest retain prompt + answer in tokens."})
    retain_probability_floor: float | None = field(
        default=None,
        metadata={
            "help": "Stop training when the retain eval set's mean answer probability (at eval_steps) falls below "
            "this; the last weights above it are saved in <output_dir>/last-good."
        },
    )
    value_coef: float = field(default=0.1, metadata={"help": "PPO: weight of the value loss."})
    value_clip: float = field(default=0.2, metadata={"help": "PPO: clip range of the value update."})
    gamma: float = field(default=1.0, metadata={"help": "PPO: discount over answer tokens."})
    lam: float = field(default=0.95, metadata={"help": "PPO: λ of generalised advantage estimation."})
    bf16: bool | None = field(
        default=None, metadata={"help": "bf16 mixed precision; defaults to on where a GPU supports it, off on CPU."}
    )

    def __post_init__(self):
        if self.bf16 is None:
            self.bf16 = bf16_default() and not self.fp16
        self.use_cpu = self.use_cpu or multiprocess_cpu()
        self.dataloader_pin_memory = self.dataloader_pin_memory and can_pin_memory()
        # PPO's value head runs on the policy's hidden states outside DDP's forward: DDP's search for unused weights
        # (transformers' default without activation checkpointing) would mark its weights ready in the forward and
        # again in the backward. Every weight that trains gets a gradient at each step, so there is none to find.
        if self.ddp_find_unused_parameters is None:
            self.ddp_find_unused_parameters = False
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"--algorithm {self.algorithm!r} is not one of {list(ALGORITHMS)}.")
        if self.beta <= 0:
            raise ValueError(
                f"--beta {self.beta}: DareU keeps the policy on a KL leash to the model before unlearning; give β > 0."
            )
        if self.retain_weight < 0:
            raise ValueError(f"--retain_weight {self.retain_weight} must be 0 or more.")
        if self.retain_loss_type not in ("kl", "nll"):
            raise ValueError(f"--retain_loss_type {self.retain_loss_type!r} is not one of 'kl', 'nll'.")
        if self.algorithm == "ppo" and not (0 <= self.gamma <= 1 and 0 <= self.lam <= 1):
            raise ValueError(f"--gamma {self.gamma} and --lam {self.lam} must lie in [0, 1].")
        if self.num_iterations is None:
            self.num_iterations = PPO_EPOCHS if self.algorithm == "ppo" else 1
        if self.num_iterations < 1:
            raise ValueError(f"--num_iterations {self.num_iterations} must be at least 1.")
        check_vllm(self)
        super().__post_init__()
        if self.algorithm == "ppo" and self.steps_per_generation % self.gradient_accumulation_steps:
            raise ValueError(
                f"--steps_per_generation {self.steps_per_generation} must be a multiple of "
                f"--gradient_accumulation_steps {self.gradient_accumulation_steps} with --algorithm ppo: each PPO "
                "epoch takes whole optimizer steps (minibatches) of the rollout batch."
            )
        if self.retain_batch_size is None:
            self.retain_batch_size = self.per_device_train_batch_size


def generalized_advantages(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> torch.Tensor:
    """GAE (Schulman et al., 2016) per token, (batch, length): A_t = Σ_k (γλ)^k δ_{t+k}, δ_t = r_t + γ·V_{t+1} − V_t,
    with V = 0 past the last answer token (`mask` is 1 on answer tokens, which come first in each row)."""
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.size(1))):
        next_value = values[:, t + 1] * mask[:, t + 1] if t + 1 < values.size(1) else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages


class DareUTrainer(ReferenceAndGuardMixin, GRPOTrainer):
    """DareU on TRL's GRPOTrainer. `train_dataset` holds the forget prompts (a `prompt` column; other columns reach the
    reward functions as keyword lists); `reward_funcs` are TRL reward functions, e.g. `rewards.AttributionReward`;
    `retain_dataset` (prompt/completion) feeds the retain regulariser; `eval_dataset` (prompt/completion sets, e.g.
    {"forget": ..., "retain": ...}) is scored for its answers' probability at evaluation, as in every rlunlearn
    trainer."""

    forget_data = "prompts"
    extra_inputs = "rewards"
    _tag_names = ["trl", "grpo", "rlunlearn", "dareu"]
    _name = "DareU"

    def __init__(
        self,
        model: str | PreTrainedModel,
        reward_funcs,
        args: DareUConfig | None = None,
        train_dataset: Dataset | None = None,
        retain_dataset: Dataset | None = None,
        eval_dataset: Dataset | dict[str, Dataset] | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        reward_processing_classes=None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple = (None, None),
        peft_config: PeftConfig | None = None,
        quantization_config=None,
    ):
        if args is None:
            args = DareUConfig(output_dir="DareU")
        elif not isinstance(args, DareUConfig):
            raise TypeError(f"DareUTrainer takes a DareUConfig, got {type(args).__name__}.")
        self.check_guard_inputs(args, eval_dataset)
        if train_dataset is None or "prompt" not in train_dataset.column_names:
            raise ValueError("DareUTrainer needs the forget prompts as `train_dataset`, with a `prompt` column.")
        if args.retain_weight > 0 and retain_dataset is None:
            raise ValueError(
                "DareUTrainer needs a `retain_dataset` (prompt/completion) for its retain regulariser, or "
                "retain_weight=0."
            )
        if not isinstance(model, str):
            # A model fresh from another TRL trainer carries that trainer's patched forward: start clean.
            remove_fused_lm_head(model.get_base_model() if is_peft_model(model) else model)
        super().__init__(
            model=model,
            reward_funcs=reward_funcs,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            reward_processing_classes=reward_processing_classes,
            callbacks=callbacks,
            optimizers=optimizers,
            peft_config=peft_config,
            quantization_config=quantization_config,
        )
        base = self.model.get_base_model() if is_peft_model(self.model) else self.model
        if getattr(base, "is_loaded_in_4bit", False):
            keep_4bit_trainable_on_cpu(self.model)  # rollouts run the model without gradient

        self.retain_sampler = None
        if args.retain_weight > 0:
            retain = tokenize_completions(
                retain_dataset, self.processing_class, ["completion"], args.max_length, "retain"
            )
            collator = GroupCollator(self.processing_class.pad_token_id, {"retain": "completion"})
            self.retain_sampler = RetainSampler(
                retain, collator, args.retain_batch_size, args.seed, self.accelerator.process_index
            )

        # TRL's fused LM head divides the logits by the sampling temperature. The model's own probabilities (the retain
        # regulariser, evaluation, the guard) need a second head at temperature 1, swapped in while they are computed.
        self._unit_temperature_forwards = {}
        if self.temperature != 1.0:
            for module in (base, self.ref_model):
                if module is not None:
                    module = self.accelerator.unwrap_model(module)
                    sampling_forward = module.forward
                    remove_fused_lm_head(module)
                    add_fused_lm_head(module, temperature=1.0, cast_lm_head_to_fp32=args.cast_lm_head_to_fp32)
                    self._unit_temperature_forwards[module] = (module.forward, sampling_forward)
                    module.forward = sampling_forward

        self._rewards_per_func = None
        self._captured = None  # what a PPO forward pass keeps: the backbone's hidden states, the policy's log-probs
        if args.algorithm == "ppo":
            # The critic: a linear value head on the policy's last hidden states, registered on the model so that the
            # optimizer, DDP and checkpoints carry it; `train` removes it at the end.
            value_head = torch.nn.Linear(base.config.get_text_config().hidden_size, 1)
            torch.nn.init.normal_(value_head.weight, std=1e-3)
            torch.nn.init.zeros_(value_head.bias)
            self.model.add_module("value_head", value_head.to(base.device))
            base.base_model.register_forward_hook(self._keep_hidden_states)

    # ---- probabilities at temperature 1 -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _at_unit_temperature(self):
        """Within the block, the fused LM heads compute the model's own log-probabilities (temperature 1)."""
        for module, (unit_forward, _) in self._unit_temperature_forwards.items():
            module.forward = unit_forward
        try:
            yield
        finally:
            for module, (_, sampling_forward) in self._unit_temperature_forwards.items():
                module.forward = sampling_forward

    def completion_logps(self, model, inputs: dict[str, torch.Tensor], group: str, reference: bool = False):
        with self._at_unit_temperature():
            return super().completion_logps(model, inputs, group, reference)

    # ---- rewards and advantages ------------------------------------------------------------------------------------

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        bad = ~torch.isfinite(rewards_per_func)
        if bad.any():
            name = self.reward_func_names[bad.any(dim=0).nonzero()[0].item()]
            raise ValueError(
                f"The reward function {name!r} returned a NaN, infinite or None reward for {int(bad.sum())} "
                "completion(s); DareU needs a finite reward for every completion."
            )
        self._rewards_per_func = rewards_per_func  # gathered over processes, for the rloo and ppo advantages
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if self.args.algorithm == "grpo":
            return output
        # Rewards of all processes (a prompt's group may span them), then this process's share.
        rewards = (self._rewards_per_func * self.reward_weights.to(self._rewards_per_func.device)).sum(dim=1)
        local = slice(self.accelerator.process_index * len(inputs), (self.accelerator.process_index + 1) * len(inputs))
        if self.args.algorithm == "rloo":
            output["advantages"] = self._rloo_advantages(rewards)[local].to(output["completion_ids"].device)
        else:
            output.update(self._ppo_advantages(output, rewards[local].to(output["completion_ids"].device)))
        return output

    def _rloo_advantages(self, rewards: torch.Tensor) -> torch.Tensor:
        """A_i = r_i − mean of the other completions' rewards for the same prompt."""
        group = self.num_generations if self.model.training else self.num_generations_eval
        if group < 2:
            raise ValueError("The rloo baseline needs at least two completions a prompt: set --num_generations >= 2.")
        grouped = rewards.view(-1, group)
        baseline = (grouped.sum(dim=1, keepdim=True) - grouped) / (group - 1)
        return (grouped - baseline).view(-1)

    def _keep_hidden_states(self, module, args, output):
        if self._captured is not None:
            self._captured["hidden"].append(output.last_hidden_state)

    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        output = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        if self._captured is not None:
            self._captured["logps"].append(output[0].detach())
        return output

    def _answer_values(self, hidden: torch.Tensor, answer_length: int) -> torch.Tensor:
        """The value of each answer position's state (the hidden state before its token is chosen), (batch, length)."""
        value_head = self.accelerator.unwrap_model(self.model).value_head
        states = hidden[:, -answer_length - 1 : -1].to(value_head.weight.dtype)
        return value_head(states).squeeze(-1).float()

    def _forward_keeping_hidden_states(self, forward):
        """Run `forward()` and return its result, the backbone's last hidden states of that pass and the per-token
        log-probabilities TRL computed in it (without gradient)."""
        self._captured = {"hidden": [], "logps": []}
        try:
            result = forward()
            return result, torch.cat(self._captured["hidden"]), torch.cat(self._captured["logps"])
        finally:
            self._captured = None

    @torch.no_grad()
    def _ppo_advantages(self, output: dict, rewards: torch.Tensor) -> dict[str, torch.Tensor]:
        """GAE over the answer tokens, the reward on the last one; returns = advantages + old values; advantages
        whitened over the answer tokens of all processes."""
        completion_ids, mask = output["completion_ids"], output["completion_mask"].float()
        input_ids = torch.cat([output["prompt_ids"], completion_ids], dim=1)
        attention_mask = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
        _, hidden, _ = self._forward_keeping_hidden_states(
            lambda: self._get_per_token_logps_and_entropies(
                self.model, input_ids, attention_mask, completion_ids.size(1)
            )
        )
        values = self._answer_values(hidden, completion_ids.size(1)) * mask
        lengths = mask.sum(dim=1).long()
        token_rewards = torch.zeros_like(values)
        has_tokens = lengths > 0
        token_rewards[has_tokens, lengths[has_tokens] - 1] = rewards[has_tokens].to(values.dtype)
        advantages = generalized_advantages(token_rewards, values, mask, self.args.gamma, self.args.lam)
        returns = advantages + values
        stats = self.accelerator.reduce(
            torch.stack([(advantages * mask).sum(), (advantages.square() * mask).sum(), mask.sum()]), reduction="sum"
        )
        mean = stats[0] / stats[2].clamp(min=1)
        std = (stats[1] / stats[2].clamp(min=1) - mean.square()).clamp(min=0).sqrt()
        advantages = (advantages - mean) / (std + 1e-8) * mask
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["value_mean"].append(
            self.accelerator.gather(values.sum() / mask.sum().clamp(min=1)).mean().item()
        )
        return {"advantages": advantages, "old_values": values, "returns": returns}

    # ---- the loss --------------------------------------------------------------------------------------------------

    def _compute_loss(self, model, inputs):
        mode = "train" if self.model.training else "eval"
        accumulation = self.current_gradient_accumulation_steps if mode == "train" else 1
        if self.args.algorithm == "ppo":
            # TRL's clipped surrogate and β·KL, on log-probabilities against those taken at rollout time.
            loss, hidden, logps = self._forward_keeping_hidden_states(
                lambda: super(DareUTrainer, self)._compute_loss(model, inputs)
            )
            self._log_ratio_statistics(logps, inputs)
            loss = loss + self.args.value_coef * self._value_loss(hidden, inputs) / accumulation
        else:
            loss = super()._compute_loss(model, inputs)
        if self.retain_sampler is not None:
            loss = loss + self.args.retain_weight * self._retain_term(model) / accumulation
        return self.check_finite(loss)

    def _ppo_epoch(self) -> int:
        """Which pass over the current rollout batch this micro-step belongs to, from 1."""
        return self._step % (self.args.steps_per_generation * self.num_iterations) // self.args.steps_per_generation + 1

    def _log_ppo_metric(self, name: str, value: float) -> None:
        """Log `value` as `name` and, in training, as `name/epoch_<k>` for the pass over the rollout batch."""
        mode = "train" if self.model.training else "eval"
        self._metrics[mode][name].append(value)
        if mode == "train":
            self._metrics[mode][f"{name}/epoch_{self._ppo_epoch()}"].append(value)

    def _global_token_mean(self, values: torch.Tensor, mask: torch.Tensor) -> float:
        totals = self.accelerator.reduce(torch.stack([(values * mask).sum(), mask.sum()]).float(), reduction="sum")
        return (totals[0] / totals[1].clamp(min=1)).item()

    @torch.no_grad()
    def _log_ratio_statistics(self, logps: torch.Tensor, inputs: dict[str, torch.Tensor]) -> None:
        """How far the policy has moved from the rollout's: the share of answer tokens whose ratio ρ = π_θ / π_old lies
        outside [1 − ε, 1 + ε] (`clip_fraction`) and the mean of (ρ − 1) − log ρ (`approx_kl`)."""
        mask = inputs["completion_mask"].float()
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]
        old_logps = inputs.get("old_per_token_logps", logps)
        log_ratio = (logps - old_logps) * mask
        ratio = log_ratio.exp()
        clipped = ((ratio < 1 - self.epsilon_low) | (ratio > 1 + self.epsilon_high)).float()
        self._log_ppo_metric("clip_fraction", self._global_token_mean(clipped, mask))
        self._log_ppo_metric("approx_kl", self._global_token_mean(ratio - 1 - log_ratio, mask))

    def _value_loss(self, hidden: torch.Tensor, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Clipped value loss, ½·max((V − R)², (clip(V, V_old ± ε_v) − R)²), over the answer tokens."""
        mask = inputs["completion_mask"].float()
        values = self._answer_values(hidden, mask.size(1))
        old, returns = inputs["old_values"], inputs["returns"]
        clipped = old + (values - old).clamp(-self.args.value_clip, self.args.value_clip)
        unclipped_loss, clipped_loss = (values - returns).square(), (clipped - returns).square()
        per_token = 0.5 * torch.maximum(unclipped_loss, clipped_loss)
        loss = (per_token * mask).sum() / mask.sum().clamp(min=1)
        self._log_ppo_metric("value_loss", self.accelerator.gather(loss.detach()).mean().item())
        value_clipped = (clipped_loss > unclipped_loss).float()
        self._log_ppo_metric("value_clip_fraction", self._global_token_mean(value_clipped.detach(), mask))
        return loss

    def _retain_term(self, model) -> torch.Tensor:
        """The retain regulariser on this process's retain batch for this micro-batch, averaged over its answer tokens."""
        micro_step = self._step % self.current_gradient_accumulation_steps if self.model.training else 0
        step = self.state.global_step if self.model.training else -1
        batch = {k: v.to(self.accelerator.device) for k, v in self.retain_sampler.draw(step, micro_step).items()}
        values, mask = self.retain_values(model, batch, self.args.retain_loss_type)
        term = (values * mask).sum() / mask.sum().clamp(min=1)
        mode = "train" if self.model.training else "eval"
        self._metrics[mode][f"retain_{self.args.retain_loss_type}"].append(
            self.accelerator.gather(term.detach()).mean().item()
        )
        return term

    # ---- logging and the end of training -----------------------------------------------------------------------------

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        metrics = self._metrics["train"]
        if self.args.algorithm == "ppo":
            # PPO's baseline is the value head, not the group: answers to different prompts that differ in reward teach
            # it; only a whole rollout batch of equal rewards leaves it the value head's error alone.
            unspread, figure = [s < 1e-8 for s in metrics.get("reward_std", [])], "reward_std = 0"
            what = "every completion of each rollout batch got the same reward"
        else:
            unspread, figure = [f == 1.0 for f in metrics.get("frac_reward_zero_std", [])], "frac_reward_zero_std = 1"
            what = "every completion of every prompt got the same reward as the others of its group"
        if self.model.training and unspread and all(unspread):
            logger.warning(
                f"DareU: {what} since the last log ({figure}), so the reward taught nothing. Raise --temperature or "
                "--num_generations, or check that the reward separates answers."
            )
        super().log(logs, start_time)

    def train(self, *args, **kwargs):
        try:
            return super().train(*args, **kwargs)
        finally:
            # The critic only serves training: the saved model is the policy alone.
            unwrapped = self.accelerator.unwrap_model(self.model)
            if "value_head" in unwrapped._modules:
                del unwrapped._modules["value_head"]
