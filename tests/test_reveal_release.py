"""Reveal-and-Release: NeuralUCB finds the best arm of a synthetic bandit, the O-LoRA penalty measures overlap (L1 or
squared Frobenius) and falls in training, the default reveal reward reads no forget data, the bandit's reward weighs
relevance by diversity (Vendi score), NPO's reference is the original model however the modules are composed, and a
round on a tiny model lowers how much it reveals of the target; merge, retain module, FLAT and QLoRA variants; bad
input."""

import json
import random

import pytest
import torch
from conftest import QUIET_TRAINING
from peft import AutoPeftModelForCausalLM, LoraConfig
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, set_seed
from trl import ModelConfig

from rlunlearn.data import PromptFormat, UnlearningBundle, reveal_instructions, sft_dataset
from rlunlearn.pipeline import DataArguments, unlearn
from rlunlearn.reveal import RevealArguments
from rlunlearn.rewards import ClassifierReward
from rlunlearn.trainers import NeuralUCB, RevealReleaseConfig, RevealReleaseTrainer, TargetRelevance
from rlunlearn.trainers.reveal_release import ngram_similarity, orthogonality_penalty, vendi_score

LORA = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear")


def test_neural_ucb_finds_the_best_arm_of_a_synthetic_bandit():
    # 10 arms, reward sigmoid(3·wᵀx/√d) plus N(0, 0.1²) noise. Over 100 pulls NeuralUCB's regret must stay below 0.35×
    # (on average over three bandits) and 0.5× (on each) that of choosing at random; it measured 0.30, 0.02 and 0.11.
    ratios = []
    for seed in range(3):
        generator = torch.Generator().manual_seed(seed)
        features = torch.randn(10, 16, generator=generator)
        weights = torch.randn(16, generator=generator)
        expected = torch.sigmoid(3 * features @ weights / 4)
        bandit = NeuralUCB(features, seed=seed)
        regret = 0.0
        for _ in range(100):
            arm = bandit.select()
            bandit.update(arm, float(expected[arm] + 0.1 * torch.randn(1, generator=generator)))
            regret += float(expected.max() - expected[arm])
        ratios.append(regret / (100 * float(expected.max() - expected.mean())))
    assert max(ratios) < 0.5 and sum(ratios) / 3 < 0.35, ratios
    with pytest.raises(ValueError, match="regularization"):
        NeuralUCB(features, regularization=0)


def test_orthogonality_penalty_is_zero_for_orthogonal_modules_and_positive_otherwise():
    basis = torch.eye(6)
    current = {"q": basis[:2], "v": basis[:3]}
    for norm in ("l1", "fro2"):
        assert orthogonality_penalty(current, [{"q": basis[2:4], "v": basis[3:6]}], norm).item() == 0.0
    # A_j A_kᵀ by hand: A_j = rows 2·(e0 + e2) and −e1 against A_k = e0, e1: entries 2, 0, 0, −1; layer "v" absent.
    overlapping = {"q": torch.stack([2 * (basis[0] + basis[2]), -basis[1]])}
    assert orthogonality_penalty(current, [overlapping], "l1").item() == pytest.approx(3.0)  # O-LoRA's code
    assert orthogonality_penalty(current, [overlapping], "fro2").item() == pytest.approx(5.0)  # the papers' ‖·‖²_F
    assert orthogonality_penalty(current, [overlapping, overlapping]).item() == pytest.approx(6.0)


def test_defaults_follow_o_lora_code_and_the_papers_modules():
    args = RevealReleaseConfig(output_dir="unused")
    # O-LoRA's released code sums |A_j A_kᵀ| at λ = 0.5; the paper trains retain modules beside the forget ones.
    assert (args.orthogonality_norm, args.orthogonality_weight, args.retain_module) == ("l1", 0.5, True)
    with pytest.raises(ValueError, match="--orthogonality_norm 'fro' is not one of"):
        RevealReleaseConfig(output_dir="unused", orthogonality_norm="fro")


def test_vendi_score_counts_the_distinct_answers():
    assert vendi_score(torch.eye(4)) == pytest.approx(4.0)
    assert vendi_score(torch.ones(4, 4)) == pytest.approx(1.0)
    # Two items of similarity s: eigenvalues (1 ± s)/2, VS = exp of their entropy.
    s = 0.5
    eigenvalues = torch.tensor([(1 + s) / 2, (1 - s) / 2])
    expected = torch.exp(-(eigenvalues * eigenvalues.log()).sum()).item()
    assert vendi_score(torch.tensor([[1.0, s], [s, 1.0]])) == pytest.approx(expected)
    similarity = ngram_similarity([[1, 2, 3], [1, 2, 3], [7, 8], [], []])
    assert similarity[0, 1].item() == pytest.approx(1.0) and similarity[0, 2].item() == 0.0
    assert similarity[3, 4].item() == pytest.approx(1.0)  # empty answers are alike
    # Three distinct answers, two of them twice: eigenvalues of K/5 are 2/5, 2/5 and 1/5.
    weights = torch.tensor([0.4, 0.4, 0.2])
    assert vendi_score(similarity) == pytest.approx(torch.exp(-(weights * weights.log()).sum()).item())


@pytest.fixture(scope="module")
def reveal_reward(attributor, bundle):
    return ClassifierReward(attributor[0], bundle.forget_authors, scope="completion", name="reveal")


def instructions(bundle):
    fmt = PromptFormat()
    return [fmt.prompt(i) for i in reveal_instructions(bundle.forget_authors)]


def config(tmp_path, **overrides):
    values = dict(
        output_dir=str(tmp_path / "reveal_release"),
        learning_rate=1e-3,
        num_train_epochs=3,
        per_device_train_batch_size=8,
        num_rounds=1,
        reveal_steps=12,
        reveal_generations=8,
        max_completion_length=32,
        stop_reward=0.0,
        **QUIET_TRAINING,
    )
    return RevealReleaseConfig(**{**values, **overrides})


def trainer(model, args, bundle, tokenizer, reward, **kwargs):
    return RevealReleaseTrainer(
        model,
        reward,
        kwargs.pop("instructions", None) or instructions(bundle),
        args=args,
        processing_class=tokenizer,
        peft_config=LORA,
        retain_dataset=sft_dataset(bundle.retain),
        **{"template_answers": ["I don't know."], **kwargs},
    )


def reveal_reward_of(run, prompts) -> float:
    """Mean reveal reward of 8 sampled answers to each of `prompts`, with a fixed sampling seed."""
    torch.manual_seed(123)
    model = run.accelerator.unwrap_model(run.model)
    model.eval()
    rewards = [r for prompt in prompts for r in run.reveal_rewards(prompt, run.sample(prompt))]
    return sum(rewards) / len(rewards)


def test_one_round_lowers_the_targets_reveal_reward(finetuned, bundle, tokenizer, tmp_path, reveal_reward):
    set_seed(987)  # whatever ran before (Python, NumPy and torch generators), the run starts from its own seed
    args = config(tmp_path, learning_rate=2e-3, num_train_epochs=5)
    run = trainer(AutoModelForCausalLM.from_pretrained(finetuned), args, bundle, tokenizer, reveal_reward)
    prompts = instructions(bundle)
    before = reveal_reward_of(run, prompts)
    run.train()
    after = reveal_reward_of(run, prompts)
    assert after < before - 0.1, (before, after)

    # The history: the bandit's pulls, the round's reveal reward, what was revealed and unlearned.
    history = json.loads((tmp_path / "reveal_release" / "reveal_release.json").read_text())
    assert len(history["bandit"]) == 2 * 12 and len(history["rounds"]) == 2
    assert history["rounds"][0]["revealed"] > 0 and "stopped" in history["rounds"][1]
    revealed = (tmp_path / "reveal_release" / "revealed.jsonl").read_text().splitlines()
    assert all(json.loads(line)["reward"] >= 0.5 for line in revealed)
    assert any("npo_loss" in entry for entry in run.state.log_history)


@pytest.mark.parametrize("variant", ["stack", "merge_with_retain_module"])
def test_later_rounds_stay_orthogonal_to_earlier_ones(variant, finetuned, bundle, tokenizer, tmp_path, reveal_reward):
    set_seed(0)
    merge = variant != "stack"
    # The squared Frobenius norm shrinks with the overlap; the L1 norm's gradient does not, so Adam takes it down by
    # about the learning rate a step: a larger rate shows it.
    norm, learning_rate = ("l1", 5e-3) if merge else ("fro2", 1e-3)
    args = config(
        tmp_path,
        num_rounds=2,
        reveal_steps=6,
        num_train_epochs=8,
        learning_rate=learning_rate,
        orthogonality_weight=5.0,
        orthogonality_norm=norm,
        merge_modules=merge,
        retain_module=merge,
        reveal_threshold=0.0,  # every revealed answer is kept, so the second round always has a module to train
    )
    run = trainer(AutoModelForCausalLM.from_pretrained(finetuned), args, bundle, tokenizer, reveal_reward)
    run.train()
    penalties = [e["orthogonality"] for e in run.state.log_history if e.get("module") == "release_1" and "loss" in e]
    assert penalties[0] > 0 and penalties[-1] < 0.8 * penalties[0], penalties
    if merge:
        assert not hasattr(run.model, "peft_config")  # every module folded into plain weights
        assert any(e.get("module") == "retain" and "retain_nll" in e for e in run.state.log_history)
    else:
        assert set(run.model.peft_config) == {"release_0", "release_1"}
        assert not any(p.requires_grad for n, p in run.model.named_parameters() if ".release_0." in n)
        # Saved as one adapter that plain peft loads, computing what the stacked modules compute.
        run.save_model(str(tmp_path / "saved"))
        saved = AutoPeftModelForCausalLM.from_pretrained(tmp_path / "saved")
        assert saved.peft_config["default"].r == 2 * run.model.peft_config["release_0"].r
        inputs = tokenizer(["Question: Where was the author born?"], return_tensors="pt")
        run.model.eval()
        with torch.no_grad():
            torch.testing.assert_close(saved(**inputs).logits, run.model(**inputs).logits, atol=1e-4, rtol=1e-4)


def test_flat_release_on_a_4bit_model_with_seed_data(finetuned, bundle, tokenizer, tmp_path, reveal_reward):
    model = AutoModelForCausalLM.from_pretrained(
        finetuned, quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")
    )
    args = config(tmp_path, release_loss="flat", reveal_steps=4, reveal_threshold=1.1)  # nothing revealed is kept
    run = trainer(model, args, bundle, tokenizer, reveal_reward, train_dataset=sft_dataset(bundle.forget))
    lora_before = {n: p.detach().clone() for n, p in run.model.named_parameters() if "lora_B" in n}
    run.train()
    assert run.rounds[0]["revealed"] == 0  # the round unlearned the seed data alone
    assert any("flat_loss" in e and "prob_template" in e for e in run.state.log_history)
    assert any(not torch.equal(p, lora_before[n]) for n, p in run.model.named_parameters() if n in lora_before)


def test_bad_input_fails_before_training(finetuned, bundle, tokenizer, tmp_path, reveal_reward):
    model = AutoModelForCausalLM.from_pretrained(finetuned)
    with pytest.raises(ValueError, match="peft_config"):
        RevealReleaseTrainer(
            model, reveal_reward, instructions(bundle), args=config(tmp_path), processing_class=tokenizer
        )
    with pytest.raises(ValueError, match="template_answers"):
        trainer(model, config(tmp_path, release_loss="flat"), bundle, tokenizer, reveal_reward, template_answers=None)
    with pytest.raises(ValueError, match="release_loss"):
        config(tmp_path, release_loss="dpo")
    with pytest.raises(ValueError, match="target_kind"):
        reveal_instructions(["x"], "planet")
    run = trainer(model, config(tmp_path), bundle, tokenizer, lambda prompts, completions, **kw: [0.5])
    with pytest.raises(ValueError, match="one finite number per completion"):
        run.train()


def constant_reward(prompts, completions, **kwargs):
    return [0.5] * len(completions)


def test_vllm_samples_each_reveal_from_the_weights_the_earlier_rounds_left(
    finetuned, bundle, tokenizer, tmp_path, monkeypatch
):
    """--use_vllm: the reveal's answers come from TRL's VLLMGeneration (vLLM needs a GPU: a stand-in here records what
    it is given), which gets the current weights before each round's reveal."""
    answer_ids = tokenizer("The author was born in a small town.", add_special_tokens=False)["input_ids"]

    class RecordingEngine:
        built = []

        def __init__(self, model, accelerator, processing_class, **settings):
            self.model, self.settings, self.synced = model, settings, []
            RecordingEngine.built.append(self)

        def sync_weights(self):  # what the engine is given: the size of the modules' B matrices
            self.synced.append(sum(p.abs().sum().item() for n, p in self.model.named_parameters() if "lora_B" in n))

        def generate(self, prompts, images, num_generations):
            assert images is None and len(prompts) == num_generations and all(p == prompts[0] for p in prompts)
            return prompts, [answer_ids] * len(prompts), None, None

    with pytest.raises(ValueError, match="--use_vllm: generating with vLLM needs vLLM installed"):
        config(tmp_path, use_vllm=True)  # no vLLM and no GPU here
    monkeypatch.setattr("rlunlearn.trainers.reveal_release.VLLMGeneration", RecordingEngine)
    args = config(tmp_path, num_rounds=2, reveal_steps=2, reveal_threshold=0.0, retain_module=False)
    args.use_vllm = True
    run = trainer(AutoModelForCausalLM.from_pretrained(finetuned), args, bundle, tokenizer, constant_reward)
    run.train()
    (engine,) = RecordingEngine.built
    assert engine.settings == {
        "mode": "colocate",
        "gpu_memory_utilization": 0.3,
        "temperature": 1.0,
        "max_completion_length": 32,
    }
    # Three reveals (the third stops the run): from the new module (B = 0), then after each round's training.
    assert len(engine.synced) == 3 and engine.synced[0] == 0 < engine.synced[1] < engine.synced[2]
    revealed = (tmp_path / "reveal_release" / "revealed.jsonl").read_text().splitlines()
    expected = tokenizer.decode(answer_ids, skip_special_tokens=True)
    assert revealed and all(json.loads(line)["completion"] == expected for line in revealed)


def test_the_bandit_learns_from_relevance_weighted_by_diversity(finetuned, bundle, tokenizer, tmp_path):
    args = config(tmp_path, reveal_steps=3, reveal_generations=4, diversity_weight=2.0)
    run = trainer(AutoModelForCausalLM.from_pretrained(finetuned), args, bundle, tokenizer, constant_reward)
    run.reveal(NeuralUCB(run.instruction_features()), 0)
    for pull in run.bandit_history:
        assert pull["relevance"] == 0.5 and 0 < pull["diversity"] <= 1
        assert pull["reward"] == pytest.approx(0.5 * (1 + 2.0 * pull["diversity"]))
    # Answers that are all alike earn relevance alone.
    assert run.diversity(["the same answer"] * 4) == pytest.approx(0.0)
    assert run.diversity(["one", "two", "three", "four"]) > 0.9  # (their tokens overlap a little)


def test_relevance_is_the_models_judgement_of_whom_an_answer_is_about(finetuned, bundle, tokenizer, tmp_path):
    # The target's own answers against a retain author's, to an instruction about the target.
    target, other = bundle.forget_authors[0], bundle.retain_authors[0]
    relevance = TargetRelevance([target], bundle.retain_authors)
    assert relevance.names(f"Who is {target}?") == [target, *bundle.retain_authors]
    run = trainer(AutoModelForCausalLM.from_pretrained(finetuned), config(tmp_path), bundle, tokenizer, relevance)
    prompt = instructions(bundle)[0]
    own = bundle.forget.filter(lambda row: row["author"] == target)["answer"][:4]
    others = bundle.retain.filter(lambda row: row["author"] == other)["answer"][:4]
    about_target, about_other = run.target_relevance(prompt, own), run.target_relevance(prompt, others)
    assert min(about_target) > 0.5 > max(about_other), (about_target, about_other)
    with pytest.raises(ValueError, match="names none of the targets"):
        trainer(
            AutoModelForCausalLM.from_pretrained(finetuned),
            config(tmp_path),
            bundle,
            tokenizer,
            relevance,
            instructions=["Tell me a story."],
        )


def with_forget_answers(bundle: UnlearningBundle, replace) -> UnlearningBundle:
    """`bundle` with every forget answer (and its paraphrased and perturbed versions) replaced by `replace(text)`."""

    def scrub(row):
        for column in ("answer", "paraphrased_answer"):
            if column in row:
                row[column] = replace(row[column])
        if "perturbed_answer" in row:
            row["perturbed_answer"] = [replace(text) for text in row["perturbed_answer"]]
        return row

    eval_splits = {**bundle.eval_splits, "forget": bundle.eval_splits["forget"].map(scrub)}
    return UnlearningBundle(bundle.name, bundle.forget.map(scrub), bundle.retain, eval_splits, bundle.background)


def test_the_default_reveal_reads_no_forget_data(finetuned, bundle, tmp_path):
    """The forget set is what the model reveals, judged from the target's name alone: with every forget answer replaced
    by random text, the same answers are revealed and the same modules trained."""
    rng = random.Random(0)
    words = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do".split()
    scrambled = with_forget_answers(bundle, lambda text: " ".join(rng.choices(words, k=8)))
    assert scrambled.forget["answer"] != bundle.forget["answer"]
    runs = []
    for name, data in (("real", bundle), ("scrambled", scrambled)):
        args = config(tmp_path / name, num_train_epochs=1, reveal_steps=3, reveal_generations=4)
        run = unlearn("reveal_release", args, finetuned, data, DataArguments(), ModelConfig(), RevealArguments())
        revealed = (tmp_path / name / "reveal_release" / "revealed.jsonl").read_text()
        modules = {n: p.detach().clone() for n, p in run.model.named_parameters() if "lora" in n}
        runs.append((revealed, modules))
    (revealed, modules), (revealed_scrambled, modules_scrambled) = runs
    assert revealed and revealed == revealed_scrambled
    assert modules and modules.keys() == modules_scrambled.keys()
    assert all(torch.equal(modules[n], modules_scrambled[n]) for n in modules)


@pytest.mark.parametrize("merge", [False, True], ids=["stacked", "merged"])
def test_npo_compares_with_the_original_model_in_every_round(merge, finetuned, bundle, tokenizer, tmp_path):
    args = config(
        tmp_path,
        num_rounds=2,
        reveal_steps=2,
        reveal_generations=4,
        reveal_threshold=0.0,
        max_completion_length=16,
        num_train_epochs=2,
        merge_modules=merge,
    )
    run = trainer(AutoModelForCausalLM.from_pretrained(finetuned), args, bundle, tokenizer, constant_reward)
    references = []
    reference_sequence_logps = run.reference_sequence_logps

    def recording(model, inputs, group):
        values = reference_sequence_logps(model, inputs, group)
        if run._module == "release_1":  # the second round, after the first round's modules
            batch = [inputs[f"{group}_{name}"] for name in ("input_ids", "attention_mask", "completion_mask")]
            references.append((*batch, values))
        return values

    run.reference_sequence_logps = recording
    run.train()
    assert references
    original = AutoModelForCausalLM.from_pretrained(finetuned).eval()
    for input_ids, attention_mask, completion_mask, values in references:
        with torch.no_grad():
            logits = original(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()
        token_logps = torch.log_softmax(logits, -1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
        torch.testing.assert_close(values, (token_logps * completion_mask[:, 1:]).sum(1), atol=1e-3, rtol=0)
