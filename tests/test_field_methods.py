"""The field's other baselines (RMU, UNDIAL, SatImp, WGA, CE-U, PDU): each loss by hand, on numbers and on a two-example
batch of a tiny model, and what each method claims to do to the model."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import QUIET_TRAINING
from transformers import AutoModelForCausalLM

from rlunlearn.data import sft_dataset
from rlunlearn.trainers import METHODS, PDUConfig, RMUConfig, SatImpConfig, UNDIALConfig, WGAConfig
from rlunlearn.trainers.ceu import ceu_token_loss
from rlunlearn.trainers.pdu import DualAscent, logit_margin
from rlunlearn.trainers.rmu import activation_distance, steering_vector
from rlunlearn.trainers.satimp import satimp_token_loss
from rlunlearn.trainers.undial import undial_targets
from rlunlearn.trainers.wga import wga_token_loss


def test_token_losses_by_hand():
    p = torch.tensor([0.5, 0.8])
    assert wga_token_loss(p.log(), beta=1.0).tolist() == pytest.approx([0.5 * math.log(0.5), 0.8 * math.log(0.8)])
    assert wga_token_loss(p.log(), beta=2.0).tolist() == pytest.approx([0.25 * math.log(0.5), 0.64 * math.log(0.8)])
    assert satimp_token_loss(p.log(), beta1=5.0, beta2=1.0).tolist() == pytest.approx(
        [0.5**5 * 0.5 * math.log(0.5), 0.8**5 * 0.2 * math.log(0.8)]
    )
    logits, token = torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([0])
    e = math.e
    assert undial_targets(logits, token, beta=1.0)[0].tolist() == pytest.approx(
        [e / (2 * e + 1)] * 2 + [1 / (2 * e + 1)]
    )
    # CE-U: the target is the softmax of (−∞, 1, 0); the loss its cross-entropy with softmax(2, 1, 0).
    log_p = [2 - math.log(e**2 + e + 1), 1 - math.log(e**2 + e + 1), -math.log(e**2 + e + 1)]
    assert ceu_token_loss(logits, token).item() == pytest.approx(-(e / (e + 1)) * log_p[1] - (1 / (e + 1)) * log_p[2])
    assert logit_margin(torch.tensor([[2.0, 1.0, 0.0], [3.0, 0.0, 0.0]])).tolist() == pytest.approx([1.0, 4.0])
    target = steering_vector(4, coefficient=6.5, seed=0)
    assert target.norm().item() == pytest.approx(6.5) and (target >= 0).all()
    assert torch.equal(target, steering_vector(4, coefficient=6.5, seed=0))  # the same on every process and resume
    assert activation_distance(torch.ones(1, 1, 4), torch.zeros(4)).item() == pytest.approx(1.0)


# Small settings for the two-example batch; the tiny model has 2 decoder layers.
SETTINGS = {
    "wga": {},
    "satimp": {},
    "undial": {"retain_weight": 0.5},
    "ceu": {},
    "pdu": {"retain_weight": 3.0},
    "rmu": {"rmu_layer": 0, "steering_coeff": 5.0, "alpha": 10.0},
}


def trainer_for(method, finetuned, bundle, tokenizer, tmp_path, **overrides):
    config_class, trainer_class = METHODS[method]
    config = config_class(
        output_dir=str(tmp_path / method),
        per_device_train_batch_size=2,
        gradient_accumulation_steps=1,
        **{**QUIET_TRAINING, **SETTINGS[method], **overrides},
    )
    return trainer_class(
        model=AutoModelForCausalLM.from_pretrained(finetuned),
        args=config,
        train_dataset=sft_dataset(bundle.forget),
        retain_dataset=sft_dataset(bundle.retain) if trainer_class.needs_retain(config) else None,
        processing_class=tokenizer,
    )


def answer_logits(model, batch, group):
    """Plain forward: the logits before each token and the answer-token mask."""
    logits = model(input_ids=batch[f"{group}_input_ids"], attention_mask=batch[f"{group}_attention_mask"]).logits
    return logits[:, :-1].float(), batch[f"{group}_completion_mask"][:, 1:].bool(), batch[f"{group}_input_ids"][:, 1:]


def token_logps(logits, tokens):
    return logits.log_softmax(-1).gather(-1, tokens[..., None])[..., 0]


def retain_nll(model, batch):
    logits, mask, tokens = answer_logits(model, batch, "retain")
    return -token_logps(logits, tokens)[mask].mean()


def by_hand(method, model, frozen, batch, args):
    """Each method's loss written plainly over the whole batch (a mean over its answer tokens)."""
    logits, mask, tokens = answer_logits(model, batch, "forget")
    logps = token_logps(logits, tokens)[mask]
    p = logps.exp()
    if method == "wga":
        return (p * logps).mean() + retain_nll(model, batch)
    if method == "satimp":
        return (p**5 * (1 - p) * logps).mean() + 0.1 * retain_nll(model, batch)
    if method == "undial":
        frozen_logits, _, _ = answer_logits(frozen, batch, "forget")
        targets = (frozen_logits - 10.0 * F.one_hot(tokens, logits.size(-1))).softmax(-1)
        return -(targets * logits.log_softmax(-1)).sum(-1)[mask].mean() + 0.5 * retain_nll(model, batch)
    if method == "ceu":  # the batch's mask already leaves each answer's first token out (tested below)
        q = logits.detach().scatter(-1, tokens[..., None], float("-inf")).softmax(-1)
        return -(q * logits.log_softmax(-1)).sum(-1)[mask].mean()
    if method == "pdu":
        margin = (logits.max(-1).values - logits.mean(-1)) ** 2
        return margin[mask].mean() + 3.0 * retain_nll(model, batch)
    if method == "rmu":

        def layer0(m, group):
            hidden = m(
                input_ids=batch[f"{group}_input_ids"],
                attention_mask=batch[f"{group}_attention_mask"],
                output_hidden_states=True,
            ).hidden_states[1]
            return hidden, batch[f"{group}_completion_mask"].bool()

        forget, forget_mask = layer0(model, "forget")
        target = steering_vector(forget.size(-1), 5.0, args.seed)
        retain, retain_mask = layer0(model, "retain")
        frozen_retain, _ = layer0(frozen, "retain")
        forget_term = ((forget - target) ** 2).mean(-1)[forget_mask].mean()
        return forget_term + 10.0 * ((retain - frozen_retain) ** 2).mean(-1)[retain_mask].mean()
    raise AssertionError(method)


@pytest.mark.parametrize("method", sorted(SETTINGS))
def test_loss_on_a_two_example_batch_by_hand(method, finetuned, bundle, tokenizer, tmp_path):
    trainer = trainer_for(method, finetuned, bundle, tokenizer, tmp_path, max_steps=1)
    batches, counts = trainer.get_batch_samples(iter(trainer.get_train_dataloader()), 1, trainer.args.device)
    batch = batches[0]
    assert batch["forget_input_ids"].size(0) == 2
    trainer.model.train()
    ours = trainer.compute_loss(trainer.model, batch, num_items_in_batch=counts)
    frozen = AutoModelForCausalLM.from_pretrained(finetuned).eval()
    with torch.no_grad():
        expected = by_hand(method, trainer.model, frozen, batch, trainer.args)
    assert ours.item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-6)
    assert abs(expected.item()) > 1e-4


def test_rmu_steers_the_layer_toward_the_target_and_updates_only_its_layers(finetuned, bundle, tokenizer, tmp_path):
    trainer = trainer_for(
        "rmu",
        finetuned,
        bundle,
        tokenizer,
        tmp_path,
        num_train_epochs=3,
        learning_rate=5e-3,
        steering_coeff=20.0,
        alpha=100.0,
        rmu_update_module="",
    )
    before = {name: param.detach().clone() for name, param in trainer.model.named_parameters()}
    assert {name for name, param in trainer.model.named_parameters() if param.requires_grad} == {
        name for name in before if name.startswith("model.layers.0.")
    }
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "forget_distance" in entry]
    # ‖h − c·u‖²/d on the forget answers: from about the target's own size (400/64) to well under half of it.
    assert logs[-1]["forget_distance"] < 0.5 * logs[0]["forget_distance"]
    assert logs[-1]["forget_cosine_to_target"] > 0.8 > logs[0]["forget_cosine_to_target"]
    assert all(entry["retain_distance"] < 0.05 * logs[0]["forget_distance"] for entry in logs)
    changed = {name for name, param in trainer.model.named_parameters() if not torch.equal(param, before[name])}
    assert changed and all(name.startswith("model.layers.0.") for name in changed)


def test_rmu_update_module_selects_the_paper_parameters(finetuned, bundle, tokenizer, tmp_path):
    trainer = trainer_for("rmu", finetuned, bundle, tokenizer, tmp_path, rmu_layer=1)
    trainable = {name for name, param in trainer.model.named_parameters() if param.requires_grad}
    assert trainable == {"model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"}


def test_pdu_dual_variable_follows_the_retain_constraint():
    dual = DualAscent(dual=1.0, step_size=2.0, warmup_epochs=1.0, epsilon=0.5)

    class State:
        epoch = 0.5

    dual.observe(total=3.0, count=2.0)  # retain loss 1.5: above ε, but still in warm-up
    dual.on_step_end(None, State, None)
    assert dual.dual == 1.0
    State.epoch = 1.5
    dual.observe(total=3.0, count=2.0)
    dual.on_step_end(None, State, None)
    assert dual.dual == pytest.approx(1.0 + 2.0 * (1.5 - 0.5))
    dual.observe(total=0.0, count=4.0)  # retain loss 0: λ falls by 2·0.5, and never below 0
    dual.on_step_end(None, State, None)
    assert dual.dual == pytest.approx(2.0)
    for _ in range(3):
        dual.observe(total=0.0, count=4.0)
        dual.on_step_end(None, State, None)
    assert dual.dual == 0.0
    restored = DualAscent.from_state(dual.state())  # what a checkpoint keeps
    assert (restored.dual, restored.epsilon, restored.step_size) == (0.0, 0.5, 2.0)


def test_pdu_epsilon_from_the_retain_loss_before_unlearning(finetuned, bundle, tokenizer, tmp_path):
    trainer = trainer_for("pdu", finetuned, bundle, tokenizer, tmp_path, max_steps=2, retain_loss_tolerance=0.5)
    rows = trainer.retain_sampler.dataset
    batch = trainer.data_collator.collate_group("retain", rows["prompt_ids"], rows["completion_ids"])
    with torch.no_grad():
        starting_nll = retain_nll(AutoModelForCausalLM.from_pretrained(finetuned), batch).item()  # over all tokens
    trainer.train()
    assert trainer.dual_ascent.epsilon == pytest.approx(1.5 * starting_nll, rel=1e-3)


def test_ceu_leaves_the_first_answer_token_out(finetuned, bundle, tokenizer, tmp_path):
    trainer = trainer_for("ceu", finetuned, bundle, tokenizer, tmp_path, max_steps=1, ignore_first_answer_tokens=2)
    # The batch as the training loop makes it, and the answer tokens its loss divides by; then the same examples as
    # collated, untrimmed.
    batches, counts = trainer.get_batch_samples(iter(trainer.get_train_dataloader()), 1, trainer.args.device)
    trimmed = batches[0]["forget_completion_mask"]
    batch = trainer.data_collator([trainer.train_dataset[i] for i in batches[0]["index"].tolist()])
    assert (batch["forget_completion_mask"].sum(1) - trimmed.sum(1)).tolist() == [2, 2]
    assert counts["forget_tokens"] == trimmed[:, 1:].sum()
    first = batch["forget_completion_mask"].argmax(1)
    assert trimmed[0, first[0] : first[0] + 2].sum() == 0 and trimmed[0, first[0] + 2] == 1


def test_bad_hyperparameters_are_named():
    with pytest.raises(ValueError, match="--rmu_update_layers"):
        RMUConfig(output_dir="x", rmu_layer=3, rmu_update_layers=[4])
    with pytest.raises(ValueError, match="--rmu_layer"):
        RMUConfig(output_dir="x", rmu_layer=-1)
    with pytest.raises(ValueError, match="--steering_coeff"):
        RMUConfig(output_dir="x", steering_coeff=0)
    with pytest.raises(ValueError, match="--beta1"):
        SatImpConfig(output_dir="x", beta1=-1)
    with pytest.raises(ValueError, match="--beta"):
        WGAConfig(output_dir="x", beta=-1)
    with pytest.raises(ValueError, match="--beta"):
        UNDIALConfig(output_dir="x", beta=0)
    with pytest.raises(ValueError, match="--retain_loss_epsilon"):
        PDUConfig(output_dir="x", retain_loss_epsilon=-0.1)
    assert RMUConfig(output_dir="x").rmu_update_layers == [5, 6, 7]  # the paper's ℓ−2 … ℓ
    assert not METHODS["ceu"][1].needs_retain(METHODS["ceu"][0](output_dir="x"))
    assert not METHODS["undial"][1].needs_retain(UNDIALConfig(output_dir="x"))  # the paper uses no retain set


def test_rmu_layer_beyond_the_model_is_named(finetuned, bundle, tokenizer, tmp_path):
    with pytest.raises(ValueError, match="--rmu_layer 2: the model has 2 decoder layers"):
        trainer_for("rmu", finetuned, bundle, tokenizer, tmp_path, rmu_layer=2)


def test_pdu_resumes_with_the_dual_variable_of_its_checkpoint(finetuned, bundle, tokenizer, tmp_path):
    from test_reliability import StopAt

    def run(output_dir, callbacks=(), resume=None):
        trainer = trainer_for(
            "pdu",
            finetuned,
            bundle,
            tokenizer,
            output_dir,
            learning_rate=1e-3,
            max_steps=6,
            dual_warmup_epochs=0,
            dual_step_size=100.0,
            retain_loss_tolerance=0.0,
            save_strategy="steps",
            save_steps=3,
        )
        for callback in callbacks:
            trainer.add_callback(callback)
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    whole = run(tmp_path / "whole")
    run(tmp_path / "killed", [StopAt(4)])
    resumed = run(tmp_path / "killed", resume=str(tmp_path / "killed" / "pdu" / "checkpoint-3"))
    assert whole.dual_ascent.dual != 3.0  # it moved
    assert resumed.dual_ascent.dual == pytest.approx(whole.dual_ascent.dual)
    assert resumed.dual_ascent.epsilon == pytest.approx(whole.dual_ascent.epsilon)
    for (name, value), resumed_value in zip(whole.model.named_parameters(), resumed.model.parameters()):
        torch.testing.assert_close(resumed_value, value, rtol=0, atol=1e-6, msg=name)
