"""LLMU: gradient ascent on the forget data, random mismatch, and a KL leash on normal data.

Yao, Xu, Liu, "Large Language Model Unlearning" (NeurIPS 2024, arXiv 2310.10683). Each step updates

    θ ← θ − ε1·∇L_fgt − ε2·∇L_rdn − ε3·∇L_nor

    L_fgt = (1/|T_f|) Σ_{t ∈ T_f} log π_θ(y_t | x, y_<t)        gradient ascent on the forget answers' tokens
    L_rdn = (1/|T_rdn|) Σ_{t ∈ T_rdn} −log π_θ(a_t | x, a_<t)    NLL of random answers a from the normal (retain) data,
                                                                   given the forget questions x
    L_nor = (1/|T_n|) Σ_{t ∈ T_n} KL(π_orig(· | ·) ‖ π_θ(· | ·))   on the answer tokens of normal (retain) data

Only answer tokens count. Each forget question gets K random answers, drawn afresh every step (per process, seeded by
rank and step, like the retain batches). ε1 = 0.5, ε2 = 1, ε3 = 1 and K = 5, the paper's code. The original model of
the KL is the base with the adapter disabled under LoRA, else a frozen copy.

Departures from the reference code (github.com/kevinyaobytedance/llm_unlearn, `utils.py`):
- Averaging: each term here is a mean over the answer tokens of the whole (global) batch, so long answers weigh more;
  the reference code averages each answer's tokens first and then the answers (`get_answer_loss`), every answer
  weighing the same.
- Random answers: here each forget question draws its own K answers; the reference draws one set of K answers a batch
  (`random.sample(normal_ans, k=K)` in `get_rand_ans_loss`) and pairs every question of the batch with it. Its answers
  come from TruthfulQA's answer lists, here from the retain set's answers.
- The KL: here the KL from the original model over the retain answers' tokens; the reference computes the cross-entropy
  −Σ p_orig·log p_θ (the KL plus the original's entropy, the same gradient) over every position of the padded
  sequence, question and padding included (`compute_kl`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .base import RetainRegularizedConfig, UnlearningTrainer
from .utils import mean_answer_logp


@dataclass
class LLMUConfig(RetainRegularizedConfig):
    r"""
    Configuration of [`LLMUTrainer`].

    Parameters:
        forget_weight (`float`, defaults to `0.5`):
            ε1, the weight of gradient ascent on the forget answers.
        random_weight (`float`, defaults to `1.0`):
            ε2, the weight of the random-mismatch NLL.
        retain_weight (`float`, defaults to `1.0`):
            ε3, the weight of the KL on normal data.
        retain_loss_type (`str`, defaults to `"kl"`):
            The normal-data term: the paper's KL from the original model, or `nll`.
        random_answers (`int`, defaults to `5`):
            K, random answers drawn for each forget question at every step.
    """

    forget_weight: float = field(default=0.5, metadata={"help": "ε1, the weight of gradient ascent on forget answers."})
    random_weight: float = field(default=1.0, metadata={"help": "ε2, the weight of the random-mismatch NLL."})
    retain_loss_type: str = field(
        default="kl", metadata={"help": "Normal-data term: kl (the paper) or nll.", "choices": ["kl", "nll"]}
    )
    random_answers: int = field(default=5, metadata={"help": "K, random answers for each forget question a step."})

    def __post_init__(self):
        super().__post_init__()
        if self.random_weight < 0 or self.random_answers < 1:
            raise ValueError(
                f"--random_weight {self.random_weight} must be 0 or more and --random_answers {self.random_answers} "
                "at least 1."
            )


class LLMUTrainer(UnlearningTrainer):
    """LLMU: forget set as `train_dataset` (prompt/completion); `retain_dataset` is the normal data, the source of both
    the random answers and the KL term."""

    config_class = LLMUConfig
    _name = "LLMU"
    _tag_names = ["rlunlearn", "unlearning", "llmu"]
    _paper = {"title": "Large Language Model Unlearning", "id": "2310.10683"}

    @classmethod
    def needs_retain(cls, args):
        return True

    def _sampled_groups(self, batch, step, micro_step):
        groups = super()._sampled_groups(batch, step, micro_step)
        # Each forget question (its prompt: the tokens before the answer) with K answers of random retain examples.
        prompts = []
        for input_ids, completion_mask in zip(batch["forget_input_ids"], batch["forget_completion_mask"]):
            prompts += [input_ids[: int(completion_mask.argmax())].tolist()] * self.args.random_answers
        answers = self.retain_sampler.completions(step, micro_step, len(prompts), stream="random")
        groups.update(self.data_collator.collate_group("random", prompts, answers))
        return groups

    def _compute_loss(self, model, inputs):
        logps, mask = self.completion_logps(model, inputs, "forget")
        self.log_metric("forget_prob", mean_answer_logp(logps, mask).exp())
        loss = self.args.forget_weight * self.token_mean(logps, mask, "forget", name="forget_logp")
        if self.args.random_weight > 0:
            random_logps, random_mask = self.completion_logps(model, inputs, "random")
            loss = loss + self.args.random_weight * self.token_mean(
                -random_logps, random_mask, "random", name="random_nll"
            )
        if self.args.retain_weight > 0:
            loss = loss + self.args.retain_weight * self.retain_term(model, inputs, self.args.retain_loss_type)
        return loss
