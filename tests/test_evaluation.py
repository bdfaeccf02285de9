import json
import math
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from rlunlearn.data import UnlearningBundle, load_tofu, sft_dataset
from rlunlearn.evaluation import (
    RETAIN,
    TARGET,
    UNLEARNED,
    EvalSettings,
    build_report,
    classifier_judge,
    evaluate_model,
    format_table,
    generate_answers,
    gradient_norms,
    judge_fluency,
    metrics,
    perplexity_judge,
    plot_tradeoff,
    repetition,
    retain_from_report,
    rouge_l,
    sample_answers,
    score_answers,
    summary_table,
    utility_notes,
)
from rlunlearn.evaluation.scoring import _batches, _padded
from rlunlearn.models import build_model
from rlunlearn.trainers.utils import tokenize_pair, tokenize_prompt

# ---- metric definitions against values computed by hand ------------------------------------------------------------


def test_probabilities_and_truth_ratio_by_hand():
    np.testing.assert_allclose(metrics.probability(np.log([0.5, 0.9])), [0.5, 0.9])
    # P(true) = 0.5, perturbed 0.25 + 0.25: normalised 0.5 / (0.5 + 0.5).
    np.testing.assert_allclose(metrics.normalized_probability(np.log([0.5]), [np.log([0.25, 0.25])]), [0.5])
    # Perturbed 0.2 and 0.05 have geometric mean 0.1; against a paraphrase of probability 0.5, R = 0.2.
    # Second example: perturbed 0.4, paraphrase 0.1: R = 4.
    ratios = metrics.truth_ratio(np.log([0.5, 0.1]), [np.log([0.2, 0.05]), np.log([0.4])])
    np.testing.assert_allclose(ratios, [0.2, 4.0], rtol=1e-8)
    assert metrics.truth_ratio_closer_to_1(ratios) == pytest.approx((0.2 + 0.25) / 2)
    assert metrics.truth_ratio_true_better(ratios) == pytest.approx((0.8 + 0.0) / 2)
    assert metrics.truth_ratio_para_share(ratios) == pytest.approx((1 / 1.2 + 1 / 5) / 2)


def test_forget_quality_model_utility_and_tug_of_war_by_hand():
    ratios = np.array([0.2, 0.5, 0.9, 1.3, 2.0])
    assert metrics.forget_quality(ratios, ratios) == 1.0
    assert metrics.forget_quality(ratios, ratios + 10) < 0.01
    assert metrics.model_utility({"a": 0.5, "b": 1.0, "c": 1.0}) == pytest.approx(3 / (2 + 1 + 1))
    model, retain = {"forget": 0.5, "retain": 0.9, "holdout": 0.3}, {"forget": 0.4, "retain": 1.0, "holdout": 0.3}
    assert metrics.tug_of_war(model, retain) == pytest.approx(0.9 * 0.9 * 1.0)
    assert metrics.tug_of_war(retain, retain) == 1.0


def test_memorisation_by_hand():
    # The final token (EOS) is left out: [hit, miss, hit, hit] -> exact memorisation 3/4.
    assert metrics.exact_memorization(np.array([1, 0, 1, 1, 0])) == pytest.approx(3 / 4)
    # Greedy predictions reproduce the answer from token 2 on: k = 2 of 4, ES = 0.5.
    assert metrics.extraction_strength(np.array([1, 0, 1, 1, 1])) == pytest.approx(0.5)
    assert metrics.extraction_strength(np.array([1, 1, 1, 1, 0])) == 1.0
    # The last token missed: only the empty suffix matches, ES = 0 (open-unlearning would give 1/4).
    assert metrics.extraction_strength(np.array([1, 1, 1, 0, 1])) == 0.0


def test_membership_inference_scores_and_privleak_by_hand():
    logps = np.array([-1.0, -2.0, -3.0, -4.0, -5.0, -0.1])  # the last one (EOS) is left out
    # k = 0.4 of 5 tokens: the lowest 2, -5 and -4.
    np.testing.assert_allclose(metrics.mia_min_k([logps]), [4.5])
    # Min-K%++ standardises by the next-token distribution: with mu = -1 and variance 4, z = (lp + 1) / 2.
    np.testing.assert_allclose(
        metrics.mia_min_k_plus_plus([logps], [np.full(6, -1.0)], [np.full(6, 4.0)]), [(2.0 + 1.5) / 2]
    )
    text = "Basil was born in Kuwait City."
    np.testing.assert_allclose(metrics.mia_zlib(np.array([-2.0]), [text]), [2.0 / len(zlib.compress(text.encode()))])
    np.testing.assert_allclose(metrics.mia_reference(np.array([-1.0]), np.array([-3.0])), [-2.0])
    assert metrics.mia_auc(np.array([0.1, 0.2]), np.array([0.3, 0.4])) == 1.0
    assert metrics.mia_auc(np.array([0.3, 0.4]), np.array([0.1, 0.2])) == 0.0
    assert metrics.privleak(0.9, 0.5) == pytest.approx((0.1 - 0.5) / 0.5 * 100)
    assert metrics.privleak(0.5, 0.5) == 0.0


def test_rouge_l_recall_and_f1_on_known_strings():
    scores = rouge_l(["the cat sat", "dogs barking loudly"], ["the cat sat on the mat", "the dog barked"])
    # LCS "the cat sat": recall 3/6, precision 3/3; stemming maps dogs/dog and barking/barked to the same stems.
    np.testing.assert_allclose(scores["recall"], [0.5, 2 / 3])
    np.testing.assert_allclose(scores["f1"], [2 * 0.5 / 1.5, 2 * (2 / 3) * (2 / 3) / (4 / 3)])
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        rouge_l(["a", "b"], ["a"])


def test_rouge_l_and_the_refusal_reward_leave_the_root_logger_alone():
    """rouge-score, left to pick its tokenizer, logs through absl, which gives the root logger a handler: a user's
    script (and the command line) would then print every message that reaches the root logger."""
    script = (
        "import logging\n"
        "from rlunlearn.evaluation.metrics import rouge_l\n"
        "from rlunlearn.rewards import RefusalBonus\n"
        "rouge_l(['the answer'], ['the answer'])\n"
        'RefusalBonus(["I don\'t know."])\n'
        "print(len(logging.getLogger().handlers))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0", result.stderr


def test_repetition_is_seq_rep_4():
    # 4-grams of "a b c d a b c d": abcd bcda cdab dabc abcd, 4 distinct of 5.
    assert repetition("a b c d a b c d") == pytest.approx(0.2)
    assert repetition("The author was born in Paris.") == 0.0
    assert repetition("the the the the the") == pytest.approx(1 - 1 / 2)
    assert repetition("too short") == 0.0


def test_answers_are_compared_with_the_paraphrased_and_the_perturbed_answers(tiny_model, tokenizer, monkeypatch):
    from datasets import Dataset

    from rlunlearn.evaluation import Generation, suite

    def fixed_answer(model, tokenizer, prompts, *args, **kwargs):
        return [Generation(text="the cat sat", token_ids=tokenizer("the cat sat")["input_ids"]) for _ in prompts]

    monkeypatch.setattr(suite, "generate_answers", fixed_answer)
    data = Dataset.from_list(
        [
            {
                "question": "Where?",
                "answer": "the cat sat there",
                "paraphrased_answer": "the cat sat on the mat",
                "perturbed_answer": ["a dog sat", "the cat ran"],
            }
        ]
        * 2
    )
    result = suite.evaluate_split(tiny_model, tokenizer, "forget", data)
    # LCS "the cat sat": recall 3/6; against the perturbed answers "sat" (1/3) and "the cat" (2/3), mean 1/2.
    assert result["per_example"]["paraphrased_rougeL_recall"] == pytest.approx([0.5, 0.5])
    assert result["per_example"]["perturbed_rougeL_recall"] == pytest.approx([0.5, 0.5])
    assert result["metrics"]["generation_repetition"] == 0.0
    assert result["questions"] == ["Where?", "Where?"]


def test_gradient_norm_attack_by_hand(tiny_model, tokenizer):
    prompt, answer = "Question: Who?\nAnswer:", " An author."
    (score,) = gradient_norms(tiny_model, tokenizer, [prompt], [answer])
    prompt_ids, answer_ids = tokenize_pair(tokenizer, prompt, answer)
    input_ids = torch.tensor([prompt_ids + answer_ids])
    logits = tiny_model(input_ids=input_ids).logits[0, len(prompt_ids) - 1 : -1]
    torch.nn.functional.cross_entropy(logits, input_ids[0, len(prompt_ids) :]).backward()
    norms = [param.grad.norm() for param in tiny_model.parameters() if param.grad is not None]
    assert score == pytest.approx(torch.stack(norms).mean().item(), rel=1e-5)
    tiny_model.zero_grad()
    frozen = tiny_model.requires_grad_(False)
    gradient_norms(frozen, tokenizer, [prompt], [answer])
    assert not any(param.requires_grad for param in frozen.parameters())  # the flags are left as they were


def test_fluency_judges(finetuned_results, tiny_model, tokenizer, bundle):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from rlunlearn.rewards.classifier import SequenceClassifier

    evaluation = json.loads(json.dumps(finetuned_results[TARGET]))  # a copy
    forget = evaluation["splits"]["forget"]
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        num_labels=2,
        id2label={0: "clean", 1: "noise"},
        label2id={"clean": 0, "noise": 1},
        pad_token_id=tokenizer.pad_token_id,
    )
    classifier = SequenceClassifier(LlamaForSequenceClassification(config).eval(), tokenizer)
    judge_fluency(evaluation, classifier_judge(classifier, "clean"), "fluency")
    expected = classifier.probabilities(forget["generations"])[:, 0]
    assert forget["per_example"]["fluency"] == pytest.approx(expected.tolist())
    assert evaluation["summary"]["forget_fluency"] == pytest.approx(expected.mean().item())

    judge_fluency(evaluation, perplexity_judge(tiny_model, tokenizer), "generation_perplexity")
    scores = score_answers(
        tiny_model,
        tokenizer,
        [f"Question: {q}\nAnswer:" for q in forget["questions"]],
        [f" {a}" for a in forget["generations"]],
    )
    assert forget["per_example"]["generation_perplexity"] == pytest.approx([math.exp(-s.mean_logp) for s in scores])

    with pytest.raises(ValueError, match="returned 1 scores for"):
        judge_fluency(evaluation, lambda questions, answers: [0.5], "broken")
    with pytest.raises(ValueError, match="--fluency_label 5"):
        classifier_judge(classifier, 5)


# ---- scoring, against a model whose logits are set ------------------------------------------------------------------


class SuccessorModel(LlamaForCausalLM):
    """P(next token = previous + 1) = 0.5; the other 0.5 is spread evenly over the rest of the vocabulary. A one-layer
    Llama underneath gives scoring its KV cache; its logits are replaced."""

    def __init__(self, vocab_size: int):
        config = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
        )
        super().__init__(config)
        rest = 0.5 / (vocab_size - 1)
        table = torch.full((vocab_size, vocab_size), math.log(rest))
        table[torch.arange(vocab_size), (torch.arange(vocab_size) + 1) % vocab_size] = math.log(0.5)
        self.register_buffer("table", table)

    def forward(self, input_ids, **kwargs):
        output = super().forward(input_ids=input_ids, **kwargs)
        output.logits = self.table[input_ids][:, -output.logits.size(1) :]
        return output


def test_scoring_reads_the_answer_tokens_of_the_logits(bundle, tokenizer):
    model = SuccessorModel(len(tokenizer))
    data = sft_dataset(bundle.forget).select(range(5))
    scores = score_answers(model, tokenizer, data["prompt"], data["completion"], batch_size=2)
    rest = 0.5 / (len(tokenizer) - 1)
    mu = 0.5 * math.log(0.5) + 0.5 * math.log(rest)
    var = 0.5 * math.log(0.5) ** 2 + 0.5 * math.log(rest) ** 2 - mu**2
    for example, score in zip(data, scores):
        prompt_ids, completion_ids = tokenize_pair(tokenizer, example["prompt"], example["completion"])
        previous = [*prompt_ids, *completion_ids][len(prompt_ids) - 1 : -1]
        hits = np.array([(p + 1) % len(tokenizer) == t for p, t in zip(previous, completion_ids)])
        np.testing.assert_allclose(score.logps, np.where(hits, math.log(0.5), math.log(rest)), rtol=1e-5)
        np.testing.assert_array_equal(score.is_top1, hits)
        np.testing.assert_allclose(score.mu, mu, rtol=1e-5)
        np.testing.assert_allclose(score.var, var, rtol=1e-4)
    # Answers not asked for the distribution's statistics get the same log-probabilities and no statistics.
    asked = [True, False, False, True, False]
    partial = score_answers(model, tokenizer, data["prompt"], data["completion"], batch_size=2, statistics=asked)
    for wanted, score, full in zip(asked, partial, scores):
        np.testing.assert_allclose(score.logps, full.logps, rtol=1e-6)
        assert (score.is_top1 is not None, score.mu is not None, score.var is not None) == (wanted,) * 3
        if wanted:
            np.testing.assert_array_equal(score.is_top1, full.is_top1)
    with pytest.raises(ValueError, match="2 statistics flags but 5 answers"):
        score_answers(model, tokenizer, data["prompt"], data["completion"], statistics=[True, False])


def test_scoring_and_generation_ignore_batching(finetuned, bundle, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(finetuned)
    data = sft_dataset(bundle.forget).select(range(6))
    batched = score_answers(model, tokenizer, data["prompt"], data["completion"], batch_size=4)
    single = score_answers(model, tokenizer, data["prompt"], data["completion"], batch_size=1)
    for a, b in zip(batched, single):
        np.testing.assert_allclose(a.logps, b.logps, rtol=1e-4, atol=1e-5)
    generated = [g.text for g in generate_answers(model, tokenizer, data["prompt"], max_new_tokens=30, batch_size=6)]
    assert generated == [generate_answers(model, tokenizer, [p], max_new_tokens=30)[0].text for p in data["prompt"]]


def test_scoring_from_a_shared_prompt_equals_a_plain_forward_pass(finetuned, bundle, tokenizer, monkeypatch):
    """Each question's answers are scored from one pass over its prompt: the log-probabilities (and the statistics of
    the next-token distribution) are those of a forward pass over prompt + answer, whatever the other answers in the
    batch and however the batch is cut for the log-softmax."""
    monkeypatch.setattr("rlunlearn.evaluation.scoring.LOG_SOFTMAX_ROWS", 2)
    model = AutoModelForCausalLM.from_pretrained(finetuned).eval()
    data = sft_dataset(bundle.forget).select(range(4))
    prompts = [p for p in data["prompt"] for _ in range(3)]
    answers = [a for a in data["completion"] for a in (a, " No.", a[: len(a) // 2])]
    scores = score_answers(model, tokenizer, prompts, answers, batch_size=6)  # two prompts a batch
    for prompt, answer, score in zip(prompts, answers, scores):
        prompt_ids, answer_ids = tokenize_pair(tokenizer, prompt, answer)
        with torch.no_grad():
            logits = model(torch.tensor([prompt_ids + answer_ids])).logits[0]
        logps = torch.log_softmax(logits[len(prompt_ids) - 1 : -1], dim=-1)
        expected = logps.gather(-1, torch.tensor(answer_ids)[:, None]).squeeze(-1)
        np.testing.assert_allclose(score.logps, expected.double().numpy(), atol=1e-5)
        np.testing.assert_array_equal(score.is_top1, (logps.argmax(-1) == torch.tensor(answer_ids)).numpy())
        np.testing.assert_allclose(score.mu, (logps.exp() * logps).sum(-1).double().numpy(), atol=1e-4)


def test_greedy_generation_equals_generate(finetuned, bundle, tokenizer):
    """Rows leave the batch at their end-of-sequence token; the tokens are still those of `generate`."""
    model = AutoModelForCausalLM.from_pretrained(finetuned).eval()
    prompts = [*sft_dataset(bundle.forget).select(range(6))["prompt"], "Question: Who?\nAnswer:"]
    generations = generate_answers(model, tokenizer, prompts, max_new_tokens=40, batch_size=7)
    assert len({len(g.token_ids) for g in generations}) > 1  # some rows left the batch before others
    for prompt, generation in zip(prompts, generations):
        input_ids = torch.tensor([tokenize_prompt(tokenizer, prompt)])
        output = model.generate(input_ids, max_new_tokens=40, do_sample=False, pad_token_id=tokenizer.pad_token_id)[
            0, input_ids.size(1) :
        ].tolist()
        if tokenizer.eos_token_id in output:
            output = output[: output.index(tokenizer.eos_token_id)]
        assert generation.token_ids == output


def test_sampled_answers_equal_generate_on_the_same_batches(finetuned, bundle, tokenizer):
    """Rows leave the batch at their end-of-sequence token, yet each sample is the one `generate` draws from the same
    seed on the same batches: the random numbers a row takes do not depend on which rows still run."""
    model = AutoModelForCausalLM.from_pretrained(finetuned).eval()
    prompts = [*sft_dataset(bundle.forget).select(range(4))["prompt"], "Question: Who?\nAnswer:"]
    samples = sample_answers(model, tokenizer, prompts, num_samples=3, max_new_tokens=40, batch_size=6, seed=7)
    assert len({len(g.token_ids) for row in samples for g in row}) > 1  # some rows left the batch before others
    prompt_ids = [tokenize_prompt(tokenizer, p) for p in prompts]
    torch.manual_seed(7)
    for batch in _batches([len(p) for p in prompt_ids], 2):  # 6 // 3 prompts a batch, in the same order
        input_ids, attention_mask = _padded([prompt_ids[i] for i in batch], tokenizer.pad_token_id, left=True)
        output = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=40,
            do_sample=True,
            top_k=0,
            num_return_sequences=3,
            pad_token_id=tokenizer.pad_token_id,
        )[:, input_ids.size(1) :].tolist()
        for row, i in enumerate(batch):
            for sample, sequence in zip(samples[i], output[row * 3 : (row + 1) * 3]):
                if tokenizer.eos_token_id in sequence:
                    sequence = sequence[: sequence.index(tokenizer.eos_token_id)]
                assert sample.token_ids == sequence


# ---- the suite ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finetuned_results(finetuned, bundle, tokenizer):
    settings = EvalSettings(max_new_tokens=60)
    return {
        TARGET: evaluate_model(
            AutoModelForCausalLM.from_pretrained(finetuned), tokenizer, bundle, settings=settings, progress=False
        ),
        RETAIN: evaluate_model(
            build_model(tokenizer, "tiny", seed=1), tokenizer, bundle, settings=settings, progress=False
        ),
    }


def test_suite_measures_every_split_and_names_what_utility_uses(finetuned_results, bundle):
    target = finetuned_results[TARGET]
    assert set(target["splits"]) == set(bundle.eval_splits)
    forget = target["splits"]["forget"]["metrics"]
    for key in (
        "probability",
        "rougeL_recall",
        "rougeL_f1",
        "truth_ratio",
        "truth_ratio_true_better",
        "truth_ratio_para_share",
        "extraction_strength",
        "exact_memorization",
        "knowmem_rougeL_f1",
        "verbmem_rougeL_f1",
        "paraphrased_rougeL_recall",
        "perturbed_rougeL_recall",
        "generation_repetition",
    ):
        assert 0.0 <= forget[key] <= 1.0, key
    assert forget["truth_ratio"] == forget["truth_ratio_closer_to_1"]
    assert (
        target["splits"]["retain"]["metrics"]["truth_ratio"]
        == target["splits"]["retain"]["metrics"]["truth_ratio_true_better"]
    )
    assert "normalized_probability" in target["splits"]["world_facts"]["metrics"]
    assert target["summary"]["model_utility_missing"] == []
    nine = [
        target["splits"][split]["metrics"][key]
        for split, key in (
            ("retain", "probability"),
            ("retain", "rougeL_recall"),
            ("retain", "truth_ratio"),
            ("real_authors", "normalized_probability"),
            ("real_authors", "rougeL_recall"),
            ("real_authors", "truth_ratio"),
            ("world_facts", "normalized_probability"),
            ("world_facts", "rougeL_recall"),
            ("world_facts", "truth_ratio"),
        )
    ]
    assert target["summary"]["model_utility"] == pytest.approx(len(nine) / sum(1 / max(v, 1e-300) for v in nine))
    assert len(target["splits"]["forget"]["per_example"]["truth_ratio"]) == len(bundle.forget)
    # A model scored on the data it memorised: its greedy predictions reproduce the answers.
    assert target["summary"]["forget_extraction_strength"] > 0.9
    assert target["summary"]["mia_auc_loss"] > 0.9  # forget answers far more likely than holdout ones
    assert target["summary"]["mia_auc_gradnorm"] > 0.9  # and nearer a minimum: smaller gradients


def test_retain_model_against_itself_is_the_ideal(finetuned_results):
    retain = finetuned_results[RETAIN]
    report = build_report(
        {RETAIN: retain, TARGET: finetuned_results[TARGET]}, {RETAIN: RETAIN, TARGET: TARGET}, retain, {}
    )
    ideal = report["models"][RETAIN]["summary"]
    assert ideal["forget_quality"] == 1.0 and ideal["privleak"] == 0.0 and ideal["tug_of_war"] == 1.0
    assert ideal["mia_auc_reference"] == 0.5
    assert report["models"][TARGET]["summary"]["forget_quality"] < ideal["forget_quality"]


def test_a_missing_split_is_named_not_dropped(bundle, tokenizer, finetuned):
    partial = UnlearningBundle(
        "partial", bundle.forget, bundle.retain, {k: v for k, v in bundle.eval_splits.items() if k != "world_facts"}
    )
    result = evaluate_model(
        AutoModelForCausalLM.from_pretrained(finetuned),
        tokenizer,
        partial,
        settings=EvalSettings(max_new_tokens=10),
        progress=False,
    )
    assert result["summary"]["model_utility_missing"] == [
        "world_facts/normalized_probability",
        "world_facts/rougeL_recall",
        "world_facts/truth_ratio",
    ]


def test_report_table_plot_and_saved_retain(tmp_path, finetuned_results):
    results = {**finetuned_results, "ga": finetuned_results[TARGET]}
    roles = {TARGET: TARGET, RETAIN: RETAIN, "ga": UNLEARNED}
    report = build_report(results, roles, finetuned_results[RETAIN], {"bundle": "test"})
    table = summary_table(report)
    assert all(name in table for name in results) and "forget quality" in table
    plot = plot_tradeoff(report, tmp_path / "plot.png")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "report.json").write_text(json.dumps(report))
    saved = retain_from_report(tmp_path / "report.json")
    again = build_report({"ga": results["ga"]}, {"ga": UNLEARNED}, saved, {})
    assert again["models"]["ga"]["summary"]["forget_quality"] == report["models"]["ga"]["summary"]["forget_quality"]


def test_suite_runs_on_tofu(tofu_dir, tokenizer):
    bundle = load_tofu(tofu_dir, "forget01", retain_authors=2)
    model = build_model(tokenizer, "tiny", seed=0)
    result = evaluate_model(model, tokenizer, bundle, settings=EvalSettings(max_new_tokens=8), progress=False)
    assert set(result["splits"]) == {"forget", "retain", "real_authors", "world_facts", "holdout"}
    assert len(result["splits"]["real_authors"]["per_example"]["normalized_probability"]) == 100
    assert result["summary"]["model_utility_missing"] == []
    assert "mia_auc_min_k_plus_plus" in result["summary"]


def test_a_model_utility_of_zero_names_the_parts_at_zero(bundle, tokenizer, monkeypatch):
    """A harmonic mean is 0 when one part is: the summary names the parts, and the report's notes print them."""
    monkeypatch.setattr(
        metrics,
        "rouge_l",
        lambda predictions, references, stemmer=True: dict.fromkeys(("recall", "f1"), np.zeros(len(references))),
    )
    model = build_model(tokenizer, "tiny", seed=0)
    result = evaluate_model(model, tokenizer, bundle, settings=EvalSettings(max_new_tokens=4), progress=False)
    assert result["summary"]["model_utility"] == 0
    zero = ["retain/rougeL_recall", "real_authors/rougeL_recall", "world_facts/rougeL_recall"]
    assert result["summary"]["model_utility_zero"] == zero
    report = build_report({"target": result, "retain": result}, {"target": TARGET, "retain": RETAIN}, None, {})
    assert utility_notes(report) == [
        f"Model utility of target, retain is 0 because of its part(s) at 0: {', '.join(zero)}."
    ]


def test_tables_format_each_figure_for_its_column_unit():
    row = {
        "model": "ga",
        "forget quality": 0.5,
        "model utility": 1.234e-4,
        "privleak": -12.3456,
        "wall time (s)": 20.7,
        "tokens/s": 554.3,
        "peak memory (MB)": 1234.56,
        "trainable (M)": 0.012345,
        "s / step": 1.2345,
        "MU / target": None,
    }
    cells = format_table([row], list(row)).splitlines()[2].split()
    assert cells == ["ga", "0.500", "1.23e-04", "-12.3", "20.7", "554", "1235", "0.0123", "1.23", "-"]


def test_knowmem_on_question_answer_splits_scores_unstemmed_as_muse(finetuned, bundle, tokenizer):
    """The question-answer splits' KnowMem is MUSE's: the greedy answer's first 32 tokens, cut at MUSE's stop strings,
    ROUGE-L F1 without stemming. The references are the model's own answers with an "s" on every word, which a
    stemmed score would call equal."""
    from rlunlearn.evaluation import metrics
    from rlunlearn.evaluation.suite import evaluate_split
    from rlunlearn.evaluation.tasks import KNOWMEM_STOP_STRINGS, cut_at

    model = AutoModelForCausalLM.from_pretrained(finetuned)
    settings = EvalSettings(max_new_tokens=32)
    rows = bundle.retain.select(range(8))
    generations = evaluate_split(model, tokenizer, "retain", rows, settings=settings)["generations"]
    answers = [cut_at(text, KNOWMEM_STOP_STRINGS) for text in generations]
    plurals = [" ".join(f"{word}s" for word in answer.split()) for answer in answers]
    result = evaluate_split(
        model, tokenizer, "retain", rows.remove_columns("answer").add_column("answer", plurals), settings=settings
    )
    assert result["generations"] == generations  # the same greedy answers, scored against other references
    unstemmed = metrics.rouge_l(answers, plurals, stemmer=False)["f1"]
    assert result["per_example"]["knowmem_rougeL_f1"] == pytest.approx(unstemmed.tolist())
    assert np.mean(unstemmed) < np.mean(metrics.rouge_l(answers, plurals)["f1"]) - 0.2
