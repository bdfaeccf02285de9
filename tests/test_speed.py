"""What makes a step cheaper than the obvious loop: the reference's log-probabilities computed once, every group scored
in one forward pass; each gives the loss the obvious loop gives. And `bench speed`'s baselines compute the same
loss as the trainers."""

import contextlib

import pytest
import torch
from conftest import QUIET_TRAINING
from transformers import AutoModelForCausalLM

from rlunlearn.arguments import DataArguments, SpeedBenchArguments
from rlunlearn.data import preference_dataset, sft_dataset
from rlunlearn.speed import PLAIN_LOSSES, build_trainers
from rlunlearn.trainers import IdkDPOConfig, IdkDPOTrainer, NPOConfig, NPOTrainer
from rlunlearn.trainers.base import ReferenceAndGuardMixin


def first_batch(trainer):
    """The first step's batch as the trainer's loop makes it (retain and random groups drawn), and its counts."""
    batches, counts = trainer.get_batch_samples(iter(trainer.get_train_dataloader()), 1, trainer.args.device)
    return batches[0], counts


@pytest.mark.parametrize("method", sorted(PLAIN_LOSSES))
def test_plain_baseline_gives_the_trainers_loss(method, finetuned, bundle, tokenizer, tmp_path):
    args = SpeedBenchArguments(steps=1, batch_size=4)
    model = AutoModelForCausalLM.from_pretrained(finetuned)
    trainer, baseline = build_trainers(method, model, tokenizer, bundle, DataArguments(), args, tmp_path)
    batch, counts = first_batch(trainer)
    trainer.model.train()
    ours = trainer.compute_loss(trainer.model, batch, num_items_in_batch=counts)
    plain = PLAIN_LOSSES[method](baseline.model, baseline.reference, batch, trainer.args)
    assert ours.item() == pytest.approx(plain.item(), abs=1e-5)
    assert abs(plain.item()) > 1e-3  # not a trivial 0 = 0


def npo_trainer(finetuned, bundle, tokenizer, tmp_path, **overrides):
    config = NPOConfig(
        output_dir=str(tmp_path / "npo"),
        learning_rate=6e-4,
        max_steps=3,
        per_device_train_batch_size=2,
        per_device_eval_batch_size=8,
        gradient_accumulation_steps=1,
        warmup_steps=0.0,
        **QUIET_TRAINING,
        **overrides,
    )
    return NPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(finetuned),
        args=config,
        train_dataset=sft_dataset(bundle.forget),
        retain_dataset=sft_dataset(bundle.retain),
        processing_class=tokenizer,
    )


def counting_reference_passes(trainer) -> list[int]:
    """Count the trainer's entries into its `reference_model` context and the forward passes of the frozen reference."""
    count = [0, 0]
    original = trainer.reference_model

    @contextlib.contextmanager
    def counted():
        count[0] += 1
        with original() as model:
            yield model

    def counted_forward(*_):
        count[1] += 1

    trainer.reference_model = counted
    trainer.ref_model.register_forward_hook(counted_forward)
    return count


def test_reference_log_probs_are_computed_once_and_train_as_a_reference_pass_does(
    finetuned, bundle, tokenizer, tmp_path
):
    precomputed = npo_trainer(finetuned, bundle, tokenizer, tmp_path / "a")
    live = npo_trainer(finetuned, bundle, tokenizer, tmp_path / "b", precompute_ref_log_probs=False)
    passes = {name: counting_reference_passes(t) for name, t in (("precomputed", precomputed), ("live", live))}
    precomputed.train()
    live.train()
    forget = len(precomputed.train_dataset)
    assert forget > 8  # more than one batch of the precomputing pass
    assert passes["precomputed"] == [1, -(-forget // 8)]  # the whole set once, in batches of 8, in one entry
    assert passes["live"] == [3, 3]  # one a step
    losses = {
        name: [e["npo_loss"] for e in t.state.log_history if "npo_loss" in e]
        for name, t in (("precomputed", precomputed), ("live", live))
    }
    assert len(losses["live"]) == 3
    assert losses["precomputed"] == pytest.approx(losses["live"], abs=1e-5)
    assert losses["live"][-1] != pytest.approx(losses["live"][0], abs=1e-4)  # training moved the loss


def padded_to(batch: dict, group: str, width: int, pad_token_id: int) -> dict:
    """`batch` with `group`'s sequences right-padded to `width`: the same examples, more padding."""
    padded = dict(batch)
    for name, value in (("input_ids", pad_token_id), ("attention_mask", 0), ("completion_mask", 0)):
        tensor = batch[f"{group}_{name}"]
        padded[f"{group}_{name}"] = torch.nn.functional.pad(tensor, (0, width - tensor.size(1)), value=value)
    return padded


def test_one_forward_pass_scores_every_group_as_separate_passes_do(finetuned, bundle, tokenizer, tmp_path, monkeypatch):
    def idkdpo(padding_free: bool) -> IdkDPOTrainer:
        config = IdkDPOConfig(
            output_dir=str(tmp_path / f"idkdpo-{padding_free}"),
            per_device_train_batch_size=3,
            gradient_accumulation_steps=1,
            bf16=False,
            padding_free=padding_free,
        )
        return IdkDPOTrainer(
            model=AutoModelForCausalLM.from_pretrained(finetuned),
            args=config,
            train_dataset=preference_dataset(bundle.forget, seed=0),
            retain_dataset=sft_dataset(bundle.retain),
            processing_class=tokenizer,
        )

    trainer = idkdpo(padding_free=False)
    batch, counts = first_batch(trainer)
    groups = ["forget", "refusal", "retain"]
    widths = {batch[f"{group}_input_ids"].size(1) for group in groups}
    assert len(widths) > 1  # groups of different lengths: padding must not change the values
    joint = trainer._joint_completion_logps(trainer.model, batch, groups)
    for group in groups:
        logps, mask = ReferenceAndGuardMixin.completion_logps(trainer, trainer.model, batch, group)
        torch.testing.assert_close(joint[group][1], mask)
        torch.testing.assert_close(joint[group][0] * mask, logps * mask, atol=1e-5, rtol=1e-6)

    # One pass for the three groups (the reference precomputed) while stacking pads them little; a pass each once it
    # would pad them much more than separate passes do (the forget answers padded to 3x the longest); packed, one pass
    # whatever their widths. The loss is the same each way.
    even = batch
    for group in groups:
        even = padded_to(even, group, max(widths), tokenizer.pad_token_id)
    uneven = padded_to(batch, "forget", 3 * max(widths), tokenizer.pad_token_id)
    packed = idkdpo(padding_free=True)
    losses = {}
    for name, model_trainer, inputs, passes in (
        ("even", trainer, even, 1),
        ("uneven", trainer, uneven, 3),
        ("packed", packed, uneven, 1),
    ):
        forward_passes = []
        hook = model_trainer.model.register_forward_hook(lambda *_, calls=forward_passes: calls.append(1))
        model_trainer.model.train()
        losses[name] = model_trainer.compute_loss(model_trainer.model, inputs, num_items_in_batch=counts).item()
        hook.remove()
        assert len(forward_passes) == passes, name
    assert losses["uneven"] == pytest.approx(losses["even"], abs=1e-5)
    assert losses["packed"] == pytest.approx(losses["even"], abs=1e-5)

    # On several processes, one pass whatever the widths: each process must run the passes the others run.
    forward_passes = []
    hook = trainer.model.register_forward_hook(lambda *_: forward_passes.append(1))
    monkeypatch.setattr(type(trainer.accelerator), "num_processes", property(lambda _: 2))
    trainer.compute_loss(trainer.model, uneven, num_items_in_batch=counts)
    hook.remove()
    assert len(forward_passes) == 1


def test_fused_lm_head_and_full_logits_give_the_same_log_probs(finetuned, bundle, tokenizer, tmp_path):
    fused, full = (
        npo_trainer(finetuned, bundle, tokenizer, tmp_path / str(flag), fused_lm_head=flag) for flag in (True, False)
    )
    assert fused.fused_lm_head and not full.fused_lm_head
    assert npo_trainer(finetuned, bundle, tokenizer, tmp_path / "default").fused_lm_head is False  # a small vocabulary
    batch, _ = first_batch(fused)
    for reference in (False, True):
        logps, mask = fused.completion_logps(fused.model, batch, "forget", reference=reference)
        expected, _ = full.completion_logps(full.model, batch, "forget", reference=reference)
        torch.testing.assert_close(logps * mask, expected * mask, atol=1e-5, rtol=1e-6)


@pytest.mark.parametrize("fused_lm_head", [False, True])
def test_padding_free_passes_give_the_padded_values_and_gradients(
    fused_lm_head, finetuned, bundle, tokenizer, tmp_path
):
    padded, packed = (
        npo_trainer(finetuned, bundle, tokenizer, tmp_path / str(flag), fused_lm_head=fused_lm_head, padding_free=flag)
        for flag in (False, True)
    )
    batch, counts = first_batch(padded)
    real_tokens = int(batch["forget_attention_mask"].sum() + batch["retain_attention_mask"].sum())
    assert real_tokens < batch["forget_attention_mask"].numel() + batch["retain_attention_mask"].numel()
    shapes = []
    packed.model.register_forward_hook(
        lambda module, args, kwargs, out: shapes.append(kwargs["input_ids"].shape), with_kwargs=True
    )
    for trainer in (padded, packed):
        trainer.model.train()
        trainer.compute_loss(trainer.model, batch, num_items_in_batch=counts).backward()
    assert shapes == [torch.Size([1, real_tokens])]  # forget and retain answers in one row, no padding token
    gradients = [{n: p.grad for n, p in t.model.named_parameters()} for t in (padded, packed)]
    for name, gradient in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], gradient, atol=1e-5, rtol=1e-4)
    for reference in (False, True):
        logps, mask = packed.completion_logps(packed.model, batch, "forget", reference=reference)
        expected, _ = padded.completion_logps(padded.model, batch, "forget", reference=reference)
        torch.testing.assert_close(logps * mask, expected * mask, atol=1e-5, rtol=1e-6)
    logits, mask = packed.answer_logits(packed.model, batch, "retain")
    expected, _ = padded.answer_logits(padded.model, batch, "retain")
    torch.testing.assert_close(logits * mask[..., None], expected * mask[..., None], atol=1e-4, rtol=1e-5)
