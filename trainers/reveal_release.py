"""Reveal-and-Release: unlearning from self-generated data, one LoRA module a round, kept orthogonal.

Xie, Teng, Ke, Wen, Wang, "Reveal and Release: Iterative LLM Unlearning with Self-generated Data" (EMNLP 2025
Findings, arXiv 2509.14624). The forget data is scarce or must not be shared: the user names only the forget *target*
(an author, an entity type, a skill), and the model is made to reveal what it knows about it. Each round k = 0, 1, ...

1. **Reveal.** The arms of a NeuralUCB bandit (`neural_ucb.py`) are instructions about the target; an arm's features are
   the model's mean hidden state over the instruction. Each of `reveal_steps` pulls samples `reveal_generations`
   answers of the current model to the instruction of highest upper confidence bound and scores each answer's
   relevance r to the target. By default r is the model's own judgement, read from the model before unlearning with
   the names swapped (`TargetRelevance`): with t the target the instruction names and c_1..c_m contrast names (other
   people, e.g. the retain authors; never the forget data),

       r(y) = π_ref(y | x) / Σ_{n ∈ {t, c_1..c_m}} π_ref(y[t→n] | x[t→n])

   the posterior, under a uniform prior, that the answer is about the target rather than a contrast; swapping the name in
   the answer too keeps a mere mention of the name from counting. Any TRL-style reward function can replace it. The
   bandit learns from the pull's reward

       R = mean_i r(y_i) · (1 + w · (VS(y_1..y_n) − 1) / (n − 1))

   VS the Vendi score of the n answers (Friedman & Dieng, 2023: exp of the entropy of the eigenvalues of K/n), K the
   cosine similarity of their token uni- and bigram counts, w = `diversity_weight`: relevant answers count for more when
   they differ from each other, irrelevant ones for nothing however diverse (w = n − 1 gives the quality-weighted Vendi
   score of Nguyen & Dieng, 2024). Answers with r >= `reveal_threshold` form the round's forget set D_k (with the seed
   forget data, if any). The round's mean r is its *reveal reward*: when it falls below `stop_reward`, or after
   `num_rounds` rounds, the run stops.
2. **Release.** A new LoRA module ΔW_k = B_k A_k is trained on D_k while the earlier modules stay frozen (stacked, or
   merged into the base weights with `merge_modules`), minimising

       L_k = γ · L_forget(D_k)  +  λ · Σ_{j<k} Σ_layers ‖A_j A_kᵀ‖  (+ α · R_retain)

   with L_forget chosen by `release_loss`: `ga`, the mean log-probability of the answer tokens (GATrainer's loss);
   `npo`, NPO's −(2/β)·log σ(−β·log π_θ(y|x)/π_ref(y|x)) (NPOTrainer's; π_ref the original model, in both composition
   modes: with `merge_modules` the merged modules are undone by a frozen adapter holding −Σ_j B_j A_j); `flat`, FLAT's
   −g*(P_e) + f*(g*(P_f)) against a template answer (FLATTrainer's). The second term is O-LoRA's orthogonality penalty
   (Wang et al., "Orthogonal Subspace Learning for Language Model Continual Learning", EMNLP 2023 Findings, arXiv
   2310.14152; written there A_jᵀA_k for A of shape input × rank, PEFT stores Aᵀ) over every adapted layer, so that each
   round unlearns in a subspace of its own and does not undo the earlier ones; ‖·‖ is `orthogonality_norm`. R_retain is
   the usual retain term (`retain_weight`, off by default since the method needs no retain data). With `retain_module`
   (on by default: the paper's limitations speak of its retain and forget modules), a retain LoRA module then learns
   the retain answers (NLL, as many examples as D_k) with the forget modules frozen, under the same penalty against
   them.

Departures from the paper: the relevance judge above is ours, and the paper's exact formula for combining relevance
with the Vendi score could not be checked here; the Vendi kernel is lexical (n-gram counts), not an embedding; the
instructions are a fixed list (built-in templates or the user's); one bandit is kept across rounds, so its estimates
mix rewards measured on the models of earlier rounds.

The bandit's pulls, the rounds' reveal rewards and what was revealed are written to `<output_dir>/reveal_release.json`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate.utils import gather_object, is_peft_model
from datasets import Dataset, concatenate_datasets
from peft import PeftConfig, get_peft_model
from peft.tuners.lora import LoraLayer
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback
from trl.generation.vllm_generation import VLLMGeneration
from trl.models.utils import disable_gradient_checkpointing

from .base import RetainRegularizedConfig, UnlearningTrainer
from .flat import DEFAULT_DIVERGENCE, DIVERGENCES, average_probability, flat_terms
from .neural_ucb import NeuralUCB
from .npo import npo_loss
from .utils import (
    GroupCollator,
    cast_trainable_to_bf16,
    check_vllm,
    mean_answer_logp,
    sharding_engine,
    tokenize_completions,
    tokenize_pair,
    tokenize_prompt,
    with_example_index,
)

RELEASE_LOSSES = ("ga", "npo", "flat")
ORTHOGONALITY_NORMS = ("l1", "fro2")
RETAIN_MODULE = "retain"
# With `merge_modules`: a frozen adapter holding −Σ_j B_j A_j of the merged modules, which turns the merged weights back
# into the original ones for the reference passes.
UNDO_MERGED = "undo_merged"


@dataclass
class RevealReleaseConfig(RetainRegularizedConfig):
    r"""
    Configuration of [`RevealReleaseTrainer`]. The optimisation fields (learning rate, epochs, batch size) apply to
    each round's release; the LoRA modules themselves are described by the `peft_config` given to the trainer.

    The paper's hyperparameters could not be checked; the defaults are O-LoRA's released code for the penalty (L1 form,
    λ = 0.5), NPO's β = 0.1 and, for NeuralUCB, its released code's 100-wide network and diagonal Z with γ = 0.1 and
    λ = 0.01 (chosen on synthetic bandits: regret about 0.13× that of random choice over 100 pulls of 10 arms).

    Parameters:
        release_loss (`str`, defaults to `"npo"`):
            The forget loss of each round's module: `ga`, `npo` or `flat` (which needs template answers).
        beta (`float`, defaults to `0.1`):
            NPO's β.
        divergence (`str`, defaults to `"tv"`):
            FLAT's f-divergence: `kl`, `js`, `pearson` or `tv`; FLAT's default (see `FLATConfig`).
        orthogonality_weight (`float`, defaults to `0.5`):
            λ, the weight of the O-LoRA penalty against the earlier modules (O-LoRA's λ1, tuned for the L1 form).
        orthogonality_norm (`str`, defaults to `"l1"`):
            How A_j A_kᵀ is measured: `l1`, the sum of its absolute entries (O-LoRA's released code, for which its
            λ1 = 0.5 was chosen), or `fro2`, its squared Frobenius norm (as O-LoRA's and Reveal-and-Release's papers
            write it; no λ was published for it, so set `orthogonality_weight` with it).
        num_rounds (`int`, defaults to `3`):
            Reveal-release rounds at most.
        merge_modules (`bool`, defaults to `False`):
            Merge each round's modules into the base weights (lossy on a 4-bit base) instead of stacking them.
        retain_module (`bool`, defaults to `True`):
            Train a retain LoRA module on retain answers after each round's forget module (needs retain data), as the
            paper's retain and forget modules; `False` needs no retain data.
        reveal_steps (`int`, defaults to `16`):
            Bandit pulls (instructions tried) a round.
        reveal_generations (`int`, defaults to `8`):
            Answers sampled for each pull.
        max_completion_length (`int`, defaults to `64`):
            Longest sampled answer in tokens.
        temperature (`float`, defaults to `1.0`):
            Sampling temperature of the reveal.
        use_vllm (`bool`, defaults to `False`):
            Sample the reveal's answers with vLLM (TRL's `VLLMGeneration` in colocate mode: the engine shares the
            training GPU, loads the model from its folder and is given the current weights before each round's
            reveal). Needs vLLM and a CUDA GPU; off, answers come from transformers' `generate`.
        vllm_gpu_memory_utilization (`float`, defaults to `0.3`):
            Share of the GPU's memory the colocated vLLM engine reserves (TRL's GRPOConfig default).
        reveal_threshold (`float`, defaults to `0.5`):
            An answer joins the forget set when its relevance is at least this.
        diversity_weight (`float`, defaults to `1.0`):
            w, how much the Vendi score of a pull's answers raises the bandit's reward over their mean relevance: at
            most (1 + w)-fold, for answers that share no n-gram; 0 rewards relevance alone.
        stop_reward (`float`, defaults to `0.05`):
            Stop when a round's mean reveal reward falls below this.
        ucb_exploration (`float`, defaults to `0.1`):
            γ, the weight of NeuralUCB's confidence width.
        ucb_regularization (`float`, defaults to `0.01`):
            λ of NeuralUCB: the initial diagonal of its design matrix and its pull towards the initial network.
        ucb_hidden_size (`int`, defaults to `100`):
            Width of NeuralUCB's network.
        ucb_train_steps (`int`, defaults to `50`):
            Adam steps each time NeuralUCB refits its network.
        ucb_learning_rate (`float`, defaults to `1e-2`):
            Adam's step size for NeuralUCB's network.
    """

    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate of each round's LoRA module."})
    num_train_epochs: float = field(default=5.0, metadata={"help": "Epochs over each round's forget set."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Batches accumulated before each update."})
    retain_weight: float = field(
        default=0.0, metadata={"help": "α, weight of a retain term in each round's loss (0: no retain data needed)."}
    )
    release_loss: str = field(
        default="npo", metadata={"help": "Forget loss of each round's module.", "choices": list(RELEASE_LOSSES)}
    )
    beta: float = field(default=0.1, metadata={"help": "NPO's β."})
    divergence: str = field(
        default=DEFAULT_DIVERGENCE, metadata={"help": "FLAT's f-divergence.", "choices": sorted(DIVERGENCES)}
    )
    orthogonality_weight: float = field(
        default=0.5, metadata={"help": "λ, weight of the O-LoRA penalty against the earlier modules."}
    )
    orthogonality_norm: str = field(
        default="l1",
        metadata={
            "help": "The O-LoRA penalty's norm of A_j A_kᵀ: l1 (O-LoRA's code, for its λ) or fro2 (squared Frobenius).",
            "choices": list(ORTHOGONALITY_NORMS),
        },
    )
    num_rounds: int = field(default=3, metadata={"help": "Reveal-release rounds at most."})
    merge_modules: bool = field(
        default=False, metadata={"help": "Merge each round's modules into the base instead of stacking them."}
    )
    retain_module: bool = field(
        default=True, metadata={"help": "Train a retain LoRA module on retain answers after each forget module."}
    )
    reveal_steps: int = field(default=16, metadata={"help": "Bandit pulls (instructions tried) a round."})
    reveal_generations: int = field(default=8, metadata={"help": "Answers sampled for each pull."})
    max_completion_length: int = field(default=64, metadata={"help": "Longest sampled answer in tokens."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the reveal."})
    use_vllm: bool = field(
        default=False,
        metadata={
            "help": "Sample the reveal's answers with vLLM, colocated on the training GPU (needs vLLM and CUDA)."
        },
    )
    vllm_gpu_memory_utilization: float = field(
        default=0.3, metadata={"help": "Share of the GPU's memory the colocated vLLM engine reserves."}
    )
    reveal_threshold: float = field(
        default=0.5, metadata={"help": "An answer joins the forget set when its relevance is at least this."}
    )
    diversity_weight: float = field(
        default=1.0, metadata={"help": "w, the weight of the Vendi score of a pull's answers in the bandit's reward."}
    )
    stop_reward: float = field(
        default=0.05, metadata={"help": "Stop when a round's mean reveal reward falls below this."}
    )
    ucb_exploration: float = field(default=0.1, metadata={"help": "γ, weight of NeuralUCB's confidence width."})
    ucb_regularization: float = field(default=0.01, metadata={"help": "λ of NeuralUCB."})
    ucb_hidden_size: int = field(default=100, metadata={"help": "Width of NeuralUCB's network."})
    ucb_train_steps: int = field(default=50, metadata={"help": "Adam steps of each NeuralUCB refit."})
    ucb_learning_rate: float = field(default=1e-2, metadata={"help": "Adam's step size for NeuralUCB."})

    def __post_init__(self):
        super().__post_init__()
        if self.release_loss not in RELEASE_LOSSES:
            raise ValueError(f"--release_loss {self.release_loss!r} is not one of {list(RELEASE_LOSSES)}.")
        if self.divergence not in DIVERGENCES:
            raise ValueError(f"--divergence {self.divergence!r} is not one of {sorted(DIVERGENCES)}.")
        if self.beta <= 0:
            raise ValueError(f"--beta is {self.beta}; NPO needs β > 0.")
        if self.orthogonality_norm not in ORTHOGONALITY_NORMS:
            raise ValueError(
                f"--orthogonality_norm {self.orthogonality_norm!r} is not one of {list(ORTHOGONALITY_NORMS)}."
            )
        for name in ("orthogonality_weight", "diversity_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} is {getattr(self, name)}; a weight must be 0 or more.")
        for name in ("num_rounds", "reveal_steps", "reveal_generations", "max_completion_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} is {getattr(self, name)}; it must be at least 1.")
        if self.temperature <= 0:
            raise ValueError(f"--temperature is {self.temperature}; sampling needs a temperature > 0.")
        if not 0 < self.vllm_gpu_memory_utilization <= 1:
            raise ValueError(
                f"--vllm_gpu_memory_utilization is {self.vllm_gpu_memory_utilization}; give a share in (0, 1]."
            )
        check_vllm(self)
        engine = sharding_engine(self)
        if engine:
            raise ValueError(
                f"Reveal-and-Release does not run under {engine}: it adds a LoRA module with a new optimizer every "
                f"round, while {engine} sets up its engine once a run. Launch it on one process or with data "
                "parallelism (examples/accelerate_configs/single_gpu.yaml or multi_gpu.yaml)."
            )


def as_completion(prompt, text: str):
    """`text` as the completion of `prompt` in TRL's form: a space-led continuation of a text prompt, or an assistant
    message after chat messages."""
    if isinstance(prompt, list):
        return [{"role": "assistant", "content": text.strip()}]
    return " " + text.strip()


def orthogonality_penalty(
    current: dict[str, torch.Tensor], earlier: list[dict[str, torch.Tensor]], norm: str = "l1"
) -> torch.Tensor:
    """O-LoRA's Σ_j Σ_layers ‖A_j A_kᵀ‖: `current` maps each adapted layer to the module's A (rank × input), each of
    `earlier` the same for an earlier module (layers it lacks count zero); `norm` is `l1` (the sum of absolute entries)
    or `fro2` (the squared Frobenius norm)."""
    total = torch.zeros((), device=next(iter(current.values())).device)
    for module in earlier:
        for layer, a_current in current.items():
            if layer in module:
                overlap = module[layer].to(a_current) @ a_current.T
                total = total + (overlap.abs().sum() if norm == "l1" else overlap.square().sum())
    return total


def vendi_score(similarity: torch.Tensor) -> float:
    """The Vendi score of n items from their similarity matrix K (K_ii = 1, positive semi-definite): exp of the Shannon
    entropy of the eigenvalues of K/n (Friedman & Dieng, 2023). 1 when all items are alike, n when none share anything."""
    eigenvalues = torch.linalg.eigvalsh(similarity.double() / similarity.size(0)).clamp(min=0)
    eigenvalues = eigenvalues[eigenvalues > 0]
    return float(torch.exp(-(eigenvalues * eigenvalues.log()).sum()))


def ngram_similarity(token_ids: list[list[int]]) -> torch.Tensor:
    """Cosine similarity of the texts' token unigram and bigram counts; empty texts are alike."""
    vocabulary: dict[tuple, int] = {}
    rows = []
    for ids in token_ids:
        grams = [(i,) for i in ids] + list(zip(ids, ids[1:])) or [()]  # () stands for the empty text
        rows.append([vocabulary.setdefault(gram, len(vocabulary)) for gram in grams])
    counts = torch.zeros(len(rows), len(vocabulary), dtype=torch.float64)
    for row, columns in enumerate(rows):
        counts[row].index_add_(0, torch.tensor(columns), torch.ones(len(columns), dtype=torch.float64))
    counts = counts / counts.norm(dim=1, keepdim=True)
    return counts @ counts.T


def replace_in_prompt(prompt, old: str, new: str):
    """`prompt` (text, or chat messages) with `old` replaced by `new`."""
    if isinstance(prompt, list):
        return [{**message, "content": message["content"].replace(old, new)} for message in prompt]
    return prompt.replace(old, new)


def prompt_text(prompt) -> str:
    return "\n".join(message["content"] for message in prompt) if isinstance(prompt, list) else prompt


@dataclass
class TargetRelevance:
    """The default reveal reward, computed by the trainer under the model before unlearning: how much more likely that
    model finds an answer about the target the instruction names than about each of `contrasts`, with the name swapped
    in the instruction and the answer alike. Reads the targets' and contrasts' names and nothing of the forget data.

    Args:
        targets: the forget targets' names, as the instructions write them; every instruction must name one.
        contrasts: other names of the same kind (e.g. retain authors); the other targets are contrasts too.
    """

    targets: list[str]
    contrasts: list[str]

    def __post_init__(self):
        if not self.targets or not self.contrasts:
            raise ValueError(
                "The relevance reward compares the target with other names: give at least one target and one "
                "contrast name."
            )

    def names(self, prompt) -> list[str]:
        """The target `prompt` names first (the longest, if it names several), then every other name to compare."""
        text = prompt_text(prompt)
        named = sorted((t for t in self.targets if t in text), key=len, reverse=True)
        if not named:
            raise ValueError(
                f"The instruction {text!r} names none of the targets {self.targets}: the relevance reward swaps the "
                "target's name, so every instruction must contain it (or pass a reward function instead)."
            )
        others = [name for name in dict.fromkeys([*self.targets, *self.contrasts]) if name != named[0]]
        return [named[0], *others]


class RevealReleaseTrainer(UnlearningTrainer):
    """Reveal-and-Release. `reward_func` scores each revealed answer's relevance to the target: a `TargetRelevance`
    (the model's own judgement, computed here under the model before unlearning), or a reward function in TRL's
    `reward_funcs` form, `f(prompts, completions) -> list[float]`, higher = reveals more; `instructions` are the prompts
    (text, or chat messages) the bandit chooses among; `train_dataset` is optional seed forget data (prompt/completion)
    that joins every round's forget set; `retain_dataset` (prompt/completion) feeds `retain_weight` and `retain_module`;
    `template_answers` are FLAT's template answers; `peft_config` describes each round's LoRA module."""

    config_class = RevealReleaseConfig
    forget_data = "self-generated"
    extra_inputs = "reveal"
    adapter_name = "release_0"
    _name = "RevealRelease"
    _tag_names = ["rlunlearn", "unlearning", "reveal-release"]
    _paper = {"title": "Reveal and Release: Iterative LLM Unlearning with Self-generated Data", "id": "2509.14624"}

    def __init__(
        self,
        model: str | PreTrainedModel,
        reward_func,
        instructions: list,
        args: RevealReleaseConfig | None = None,
        train_dataset: Dataset | None = None,
        retain_dataset: Dataset | None = None,
        eval_dataset: Dataset | dict[str, Dataset] | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        peft_config: PeftConfig | None = None,
        template_answers: list[str] | None = None,
        callbacks: list[TrainerCallback] | None = None,
        quantization_config=None,
    ):
        if args is None:
            args = RevealReleaseConfig(output_dir="RevealRelease")
        elif not isinstance(args, RevealReleaseConfig):
            raise TypeError(f"RevealReleaseTrainer takes a RevealReleaseConfig, got {type(args).__name__}.")
        if peft_config is None:
            raise ValueError(
                "RevealReleaseTrainer trains one LoRA module a round: pass a `peft_config` (e.g. peft.LoraConfig(r=8))."
            )
        if not isinstance(model, str) and is_peft_model(model):
            raise ValueError("The model already has LoRA adapters: merge them first (`model.merge_and_unload()`).")
        if not instructions:
            raise ValueError("RevealReleaseTrainer needs `instructions`: the prompts that ask about the forget target.")
        if isinstance(reward_func, TargetRelevance):
            for prompt in instructions:
                reward_func.names(prompt)  # every instruction names a target
        elif not callable(reward_func):
            raise ValueError(
                "`reward_func` must be a TargetRelevance or a reward function: f(prompts, completions) -> list of "
                "floats."
            )
        if args.merge_modules and (peft_config.use_dora or peft_config.bias != "none" or peft_config.rank_pattern):
            raise ValueError(
                "--merge_modules undoes the merged modules as B·A for the passes through the original model: use plain "
                "LoRA modules (no DoRA, bias='none', one rank), or stack them."
            )
        if args.release_loss == "flat" and not template_answers:
            raise ValueError("release_loss='flat' needs `template_answers` (e.g. refusals such as \"I don't know.\").")
        self.forget_groups = (
            {"forget": "rejected", "template": "chosen"} if args.release_loss == "flat" else {"forget": "completion"}
        )
        self.template_answers = list(template_answers or [])
        self._template_rng = random.Random(args.seed)
        if train_dataset is not None:
            missing = [c for c in ("prompt", "completion") if c not in train_dataset.column_names]
            if missing:
                raise ValueError(f"The seed forget data lacks column(s) {missing}; give prompt/completion rows.")
            train_dataset = Dataset.from_list(self._forget_rows(train_dataset["prompt"], train_dataset["completion"]))
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            retain_dataset=retain_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            peft_config=peft_config,
            quantization_config=quantization_config,
        )
        self.reward_func = reward_func
        self.instructions = list(instructions)
        self.module_config = peft_config
        unwrapped = self.accelerator.unwrap_model(self.model)
        self.quantized = getattr(unwrapped, "is_loaded_in_4bit", False) or getattr(
            unwrapped, "is_loaded_in_8bit", False
        )
        self.seed_data = self.train_dataset
        self.forget_collator = self.data_collator
        self._phase = "release"
        self._module = self.adapter_name
        self._module_A: dict[str, torch.Tensor] = {}
        self._earlier_modules: dict[str, dict[str, torch.Tensor]] = {}
        # With merge_modules: for each adapted layer, (A, scaling·B) of every module merged into the base so far.
        self._merged_modules: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.rounds: list[dict] = []
        self.bandit_history: list[dict] = []
        self.vllm_generation = None
        if self.args.use_vllm:
            self.vllm_generation = VLLMGeneration(
                model=unwrapped,
                accelerator=self.accelerator,
                processing_class=self.processing_class,
                mode="colocate",
                gpu_memory_utilization=self.args.vllm_gpu_memory_utilization,
                temperature=self.args.temperature,
                max_completion_length=self.args.max_completion_length,
            )

    @classmethod
    def needs_retain(cls, args) -> bool:
        return args.retain_weight > 0 or args.retain_module

    @classmethod
    def needs_reference(cls, args) -> bool:
        return args.release_loss == "npo" or (args.retain_weight > 0 and args.retain_loss_type == "kl")

    def _forget_rows(self, prompts: list, completions: list) -> list[dict]:
        """Forget rows in the form the release loss reads (FLAT: a template answer as `chosen`)."""
        if "template" not in self.forget_groups:
            return [{"prompt": p, "completion": c} for p, c in zip(prompts, completions)]
        return [
            {"prompt": p, "rejected": c, "chosen": as_completion(p, self._template_rng.choice(self.template_answers))}
            for p, c in zip(prompts, completions)
        ]

    @contextlib.contextmanager
    def reference_model(self):
        """The original model: every module disabled when they are stacked; once modules were merged into the base,
        the frozen adapter that undoes them, alone."""
        # Re-enabling the adapters after the reference pass makes PEFT mark every active adapter trainable again:
        # keep the earlier modules frozen.
        flags = [(param, param.requires_grad) for param in self.model.parameters()]
        model = self.accelerator.unwrap_model(self.model)
        try:
            if is_peft_model(model) and UNDO_MERGED in model.peft_config:
                active = list(model.base_model.active_adapters)
                model.base_model.set_adapter([UNDO_MERGED], inference_mode=True)
                try:
                    with (
                        torch.no_grad(),
                        disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs),
                    ):
                        yield self.model
                finally:
                    model.base_model.set_adapter(active)
            else:
                with super().reference_model() as reference:
                    yield reference
        finally:
            for param, flag in flags:
                param.requires_grad_(flag)

    # ---- reveal ------------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def instruction_features(self) -> torch.Tensor:
        """The arms' features: the mean last hidden state over each instruction, under the model before unlearning."""
        features = []
        with self.reference_model() as model:
            for prompt in self.instructions:
                ids = torch.tensor([tokenize_prompt(self.processing_class, prompt)], device=self.accelerator.device)
                hidden = model(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states[-1]
                features.append(hidden[0].float().mean(dim=0).cpu())
        return torch.stack(features)

    @torch.no_grad()
    def sample(self, prompt) -> list[str]:
        """`reveal_generations` answers of the current model to `prompt` (sampled from the whole distribution)."""
        model = self.accelerator.unwrap_model(self.model)
        ids = tokenize_prompt(self.processing_class, prompt)
        if self.vllm_generation is not None:
            n = self.args.reveal_generations
            _, completion_ids, _, _ = self.vllm_generation.generate([ids] * n, None, n)
            return self.processing_class.batch_decode(completion_ids, skip_special_tokens=True)
        input_ids = torch.tensor([ids] * self.args.reveal_generations, device=self.accelerator.device)
        with disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            output = model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                do_sample=True,
                temperature=self.args.temperature,
                top_k=0,
                top_p=1.0,
                max_new_tokens=self.args.max_completion_length,
                pad_token_id=self.processing_class.pad_token_id,
            )
        return self.processing_class.batch_decode(output[:, len(ids) :], skip_special_tokens=True)

    def reveal_rewards(self, prompt, completions: list[str]) -> list[float]:
        """Each answer's relevance to the target: `TargetRelevance`, or the reward function given."""
        if isinstance(self.reward_func, TargetRelevance):
            return self.target_relevance(prompt, completions)
        rewards = self.reward_func(prompts=[prompt] * len(completions), completions=completions)
        rewards = [float("nan") if r is None else float(r) for r in rewards]
        if len(rewards) != len(completions) or not all(torch.isfinite(torch.tensor(rewards))):
            raise ValueError(
                f"The reveal reward {getattr(self.reward_func, '__name__', self.reward_func)!r} returned {rewards} for "
                f"{len(completions)} completions; it must return one finite number per completion."
            )
        return rewards

    @torch.no_grad()
    def target_relevance(self, prompt, completions: list[str]) -> list[float]:
        """For each answer y to `prompt`, which names the target t: π_ref(y | x) / Σ_n π_ref(y[t→n] | x[t→n]) over t and
        the contrast names, π_ref the model before unlearning and the probabilities those of the whole answer."""
        names = self.reward_func.names(prompt)
        target, prompt_ids, completion_ids = names[0], [], []
        for completion in completions:
            for name in names:
                swapped = replace_in_prompt(prompt, target, name)
                ids, answer_ids = tokenize_pair(
                    self.processing_class, swapped, as_completion(swapped, completion.replace(target, name))
                )
                if self.args.max_length is not None:
                    answer_ids = answer_ids[: max(1, self.args.max_length - len(ids))]
                prompt_ids.append(ids)
                completion_ids.append(answer_ids)
        collator, size = self.forget_collator, self.args.per_device_eval_batch_size
        totals = []
        # The reference entered once for every batch: switching the modules off and on costs more than a small pass.
        with self.reference_model() as reference:
            for start in range(0, len(prompt_ids), size):
                batch = collator.collate_group(
                    "relevance", prompt_ids[start : start + size], completion_ids[start : start + size]
                )
                batch = {key: value.to(self.accelerator.device) for key, value in batch.items()}
                logps, mask = self.completion_logps(reference, batch, "relevance")
                totals.append((logps.float() * mask).sum(1))
        return torch.cat(totals).view(len(completions), len(names)).softmax(dim=1)[:, 0].tolist()

    def diversity(self, completions: list[str]) -> float:
        """(VS − 1) / (n − 1) of the n answers, VS their Vendi score under the n-gram kernel: 0 when all are alike, 1
        when none share a token."""
        if len(completions) < 2:
            return 0.0
        token_ids = self.processing_class(completions, add_special_tokens=False)["input_ids"]
        return (vendi_score(ngram_similarity(token_ids)) - 1) / (len(completions) - 1)

    def reveal(self, bandit: NeuralUCB, round_index: int) -> tuple[list[dict], float]:
        """One round's reveal: `reveal_steps` bandit pulls; returns the answers whose relevance reaches
        `reveal_threshold` (with their prompt and relevance), gathered over processes, and the mean relevance of every
        sampled answer. The bandit learns from each pull's mean relevance, raised by the answers' diversity."""
        model = self.accelerator.unwrap_model(self.model)
        if self.vllm_generation is not None:
            # The engine samples from the weights it was last given: give it the model the earlier rounds left (a new
            # object once modules were merged into the base).
            self.vllm_generation.model = model
            self.vllm_generation.sync_weights()
        was_training = model.training
        model.eval()
        kept, all_rewards = [], []
        for pull in range(self.args.reveal_steps):
            predicted, width = bandit.scores()
            arm = int(torch.argmax(predicted + width))
            prompt = self.instructions[arm]
            completions = self.sample(prompt)
            rewards = self.reveal_rewards(prompt, completions)
            # Every process updates its copy of the bandit with the same value, so that they all choose alike.
            rewards_everywhere = gather_object(rewards)
            relevance = sum(rewards_everywhere) / len(rewards_everywhere)
            diversities = gather_object([self.diversity(completions)])
            diversity = sum(diversities) / len(diversities)
            pull_reward = relevance * (1 + self.args.diversity_weight * diversity)
            bandit.update(arm, pull_reward)
            all_rewards.extend(rewards_everywhere)
            revealed = [
                {"prompt": prompt, "completion": c, "reward": r}
                for c, r in zip(completions, rewards)
                if r >= self.args.reveal_threshold
            ]
            kept.extend(revealed)
            self.bandit_history.append(
                {
                    "round": round_index,
                    "pull": pull,
                    "arm": arm,
                    "instruction": prompt,
                    "predicted": predicted[arm].item(),
                    "width": width[arm].item(),
                    "relevance": relevance,
                    "diversity": diversity,
                    "reward": pull_reward,
                    "kept": len(revealed),
                }
            )
        model.train(was_training)
        unique = {(json.dumps(row["prompt"]), row["completion"]): row for row in gather_object(kept)}
        return list(unique.values()), sum(all_rewards) / len(all_rewards)

    # ---- release -----------------------------------------------------------------------------------------------------

    def _start_module(self, name: str, phase: str, dataset: Dataset, groups: dict[str, str]) -> None:
        """Add the LoRA module `name` (or reuse it), make it the only trainable one with every module active, and set
        the phase's data."""
        model = self.accelerator.unwrap_model(self.model)
        if not is_peft_model(model):  # the earlier modules were merged into the base
            model = self.model = get_peft_model(model, copy.deepcopy(self.module_config), adapter_name=name)
            self._add_undo_adapter(model)
        elif name not in model.peft_config:
            model.add_adapter(name, copy.deepcopy(self.module_config))
        model.base_model.set_adapter([module for module in model.peft_config if module != UNDO_MERGED])
        for param_name, param in model.named_parameters():
            param.requires_grad = f".{name}." in param_name
        if self.quantized and self.args.bf16:
            cast_trainable_to_bf16(model)
        # The module's A matrix in each adapted layer: what the orthogonality penalty reads.
        self._module_A = {
            layer: module.lora_A[name].weight
            for layer, module in model.named_modules()
            if isinstance(module, LoraLayer) and name in module.lora_A
        }
        self.model_wrapped = self.model
        self.optimizer, self.lr_scheduler = None, None
        self._module, self._phase = name, phase
        self.data_collator = GroupCollator(self.processing_class.pad_token_id, groups)
        self._signature_columns = ["prompt_ids", "index", *(f"{column}_ids" for column in groups.values())]
        self.train_dataset = dataset

    def _merge_modules(self) -> None:
        """Merge the modules into the base weights, keeping each one's A and scaling·B for the adapter that undoes
        them."""
        model = self.accelerator.unwrap_model(self.model)
        if UNDO_MERGED in model.peft_config:
            model.delete_adapter(UNDO_MERGED)
        for layer, module in model.named_modules():
            if isinstance(module, LoraLayer):
                for name in module.active_adapters:
                    a, b = module.lora_A[name].weight, module.lora_B[name].weight
                    self._merged_modules.setdefault(layer, []).append(
                        (a.detach().clone(), (b * module.scaling[name]).detach().clone())
                    )
        self.model = self.model_wrapped = model.merge_and_unload()

    def _add_undo_adapter(self, model) -> None:
        """A frozen adapter whose update is −Σ_j scaling_j·B_j A_j over the merged modules: with it alone active, the
        merged model computes what the original one did (exactly up to rounding on a full-precision base)."""
        if not self._merged_modules:
            return
        rank = sum(a.size(0) for a, _ in next(iter(self._merged_modules.values())))
        config = copy.deepcopy(self.module_config)
        config.r, config.lora_alpha, config.lora_dropout, config.use_rslora = rank, rank, 0.0, False  # scaling 1
        config.alpha_pattern = {}
        model.add_adapter(UNDO_MERGED, config)
        for layer, module in model.named_modules():
            if isinstance(module, LoraLayer) and UNDO_MERGED in module.lora_A:
                parts = self._merged_modules[layer]
                module.lora_A[UNDO_MERGED].weight.data.copy_(torch.cat([a for a, _ in parts]))
                module.lora_B[UNDO_MERGED].weight.data.copy_(-torch.cat([b for _, b in parts], dim=1))

    def _train_module(self):
        """Train the current module and keep its A matrices for the later modules' penalty; returns the Trainer's
        output and the module's log, each entry marked with the round and the module."""
        output = super().train()
        self._earlier_modules[self._module] = {layer: a.detach().clone() for layer, a in self._module_A.items()}
        round_index = len(self.rounds) - 1
        return output, [{**entry, "round": round_index, "module": self._module} for entry in self.state.log_history]

    def _release_loss(self, model, inputs) -> torch.Tensor:
        if self.args.release_loss == "flat":
            p_template = average_probability(*self.completion_logps(model, inputs, "template"))
            p_forget = average_probability(*self.completion_logps(model, inputs, "forget"))
            template_term, forget_term = flat_terms(p_template, p_forget, self.args.divergence)
            self.log_metric("prob_template", p_template)
            self.log_metric("prob_forget", p_forget)
            return self.sequence_mean(template_term + forget_term, "forget", name="flat_loss")
        if self.args.release_loss == "npo":
            npo = npo_loss(self.log_ratio(model, inputs, "forget"), self.args.beta)
            return self.sequence_mean(npo, "forget", name="npo_loss")
        logps, mask = self.completion_logps(model, inputs, "forget")
        self.log_metric("forget_prob", mean_answer_logp(logps, mask).exp())
        return self.token_mean(logps, mask, "forget", name="forget_logp")

    def _compute_loss(self, model, inputs):
        if self._phase == RETAIN_MODULE:
            loss = self.retain_term(model, inputs, "nll")
        else:
            loss = self.args.forget_weight * self._release_loss(model, inputs)
            if self.args.retain_weight > 0:
                loss = loss + self.args.retain_weight * self.retain_term(model, inputs, self.args.retain_loss_type)
        earlier = [a for name, a in self._earlier_modules.items() if name != self._module]
        if earlier and self.args.orthogonality_weight > 0:
            penalty = orthogonality_penalty(self._module_A, earlier, self.args.orthogonality_norm)
            self.log_metric("orthogonality", penalty)
            # The same on every process and micro-batch: one share of it per micro-batch sums to λ·penalty.
            steps = self.current_gradient_accumulation_steps if self.model.training else 1
            loss = loss + self.args.orthogonality_weight * penalty / steps
        return loss

    def _sampled_groups(self, batch, step, micro_step):
        if self._phase == RETAIN_MODULE or self.args.retain_weight == 0:
            return {}
        return super()._sampled_groups(batch, step, micro_step)

    # ---- the rounds --------------------------------------------------------------------------------------------------

    def train(self, resume_from_checkpoint=None, trial=None, **kwargs):
        if resume_from_checkpoint:
            raise ValueError(
                "Reveal-and-Release adds a module a round and cannot resume from a checkpoint; run it again."
            )
        args = self.args
        bandit = NeuralUCB(
            self.instruction_features(),
            hidden_size=args.ucb_hidden_size,
            regularization=args.ucb_regularization,
            exploration=args.ucb_exploration,
            learning_rate=args.ucb_learning_rate,
            train_steps=args.ucb_train_steps,
            seed=args.seed,
        )
        (Path(args.output_dir) / "revealed.jsonl").unlink(missing_ok=True)
        log_history, output = [], None
        for round_index in range(args.num_rounds + 1):
            revealed, reveal_reward = self.reveal(bandit, round_index)
            record = {"round": round_index, "reveal_reward": reveal_reward, "revealed": len(revealed)}
            self.rounds.append(record)
            if round_index == args.num_rounds:
                record["stopped"] = f"the last of --num_rounds {args.num_rounds} rounds is done"
            elif reveal_reward < args.stop_reward:
                record["stopped"] = f"the reveal reward fell below --stop_reward {args.stop_reward}"
            elif not revealed and self.seed_data is None:
                record["stopped"] = f"no answer reached --reveal_threshold {args.reveal_threshold}"
            log_history.append(dict(record))
            self._write_history(revealed)
            if "stopped" in record:
                break

            forget = self._tokenized_forget(revealed, round_index)
            self._start_module(f"release_{round_index}", "release", forget, self.forget_groups)
            output, log = self._train_module()
            log_history += log
            if args.retain_module:
                retain = self.retain_sampler.dataset.shuffle(seed=args.seed + round_index)
                retain = retain.select(range(min(len(forget), len(retain))))
                self._start_module(RETAIN_MODULE, RETAIN_MODULE, retain, {"retain": "completion"})
                output, log = self._train_module()
                log_history += log
            if args.merge_modules:
                self._merge_modules()
        self.data_collator = self.forget_collator
        self.state.log_history = log_history
        return output

    def _save(self, output_dir: str | None = None, state_dict=None):
        """Stacked modules are saved as one LoRA adapter whose update is exactly their sum (peft's `cat` combination:
        its rank is the sum of theirs), so that the folder loads with plain peft (`AutoPeftModelForCausalLM`)."""
        model = self.accelerator.unwrap_model(self.model)
        modules = [module for module in getattr(model, "peft_config", {}) if module != UNDO_MERGED]
        if not is_peft_model(model) or modules == ["default"]:
            return super()._save(output_dir, state_dict)
        output_dir = output_dir or self.args.output_dir
        model.add_weighted_adapter(modules, [1.0] * len(modules), "default", combination_type="cat")
        try:
            model.save_pretrained(output_dir, selected_adapters=["default"])
        finally:
            model.delete_adapter("default")
            model.base_model.set_adapter(modules)
        self.processing_class.save_pretrained(output_dir)

    def _tokenized_forget(self, revealed: list[dict], round_index: int) -> Dataset:
        columns = ["prompt_ids", *(f"{c}_ids" for c in self.forget_groups.values())]
        parts = []
        if revealed:
            prompts = [r["prompt"] for r in revealed]
            rows = self._forget_rows(prompts, [as_completion(p, r["completion"]) for p, r in zip(prompts, revealed)])
            tokenized = tokenize_completions(
                Dataset.from_list(rows),
                self.processing_class,
                list(self.forget_groups.values()),
                self.args.max_length,
                f"round {round_index} revealed",
            )
            parts.append(tokenized.select_columns(columns))
        if self.seed_data is not None:
            parts.append(self.seed_data.select_columns(columns))
        return with_example_index(concatenate_datasets(parts))

    def _write_history(self, revealed: list[dict]) -> None:
        if not self.is_world_process_zero():
            return
        path = Path(self.args.output_dir)
        path.mkdir(parents=True, exist_ok=True)
        history = {"rounds": self.rounds, "bandit": self.bandit_history, "instructions": self.instructions}
        (path / "reveal_release.json").write_text(json.dumps(history, indent=2, default=str))
        with open(path / "revealed.jsonl", "a") as handle:
            for row in revealed:
                handle.write(json.dumps({"round": self.rounds[-1]["round"], **row}, default=str) + "\n")
