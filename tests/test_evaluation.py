import numpy as np
import pytest
import torch

from rlunlearn.data import sft_dataset
from rlunlearn.evaluation import answer_probability, generate_answers, rouge_l, score_answers


def test_answer_probability_is_exp_of_the_mean_token_log_probability():
    token_logps = [np.log([0.5, 0.125]), np.log([0.9])]
    np.testing.assert_allclose(answer_probability(token_logps), [0.25, 0.9])


def test_rouge_l_recall_and_f1_on_known_strings():
    scores = rouge_l(["the cat sat", "dogs barking loudly"], ["the cat sat on the mat", "the dog barked"])
    # LCS "the cat sat": recall 3/6, precision 3/3; stemming maps dogs/dog and barking/barked to the same stems.
    np.testing.assert_allclose(scores["recall"], [0.5, 2 / 3])
    np.testing.assert_allclose(scores["f1"], [2 * 0.5 / 1.5, 2 * (2 / 3) * (2 / 3) / (4 / 3)])


def test_scoring_is_the_log_softmax_of_the_answer_tokens_and_ignores_batching(bundle, tokenizer, tiny_model):
    data = sft_dataset(bundle.forget).select(range(5))
    batched = score_answers(tiny_model, tokenizer, data["prompt"], data["completion"], batch_size=4)
    single = score_answers(tiny_model, tokenizer, data["prompt"], data["completion"], batch_size=1)
    for a, b in zip(batched, single):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # By hand for the first example.
    prompt_ids = tokenizer(data[0]["prompt"]).input_ids
    full_ids = tokenizer(data[0]["prompt"] + data[0]["completion"] + tokenizer.eos_token).input_ids
    with torch.no_grad():
        logps = torch.log_softmax(tiny_model(torch.tensor([full_ids])).logits[0], -1)
    expected = [logps[t - 1, full_ids[t]].item() for t in range(len(prompt_ids), len(full_ids))]
    np.testing.assert_allclose(batched[0], expected, rtol=1e-4, atol=1e-5)


def test_generation_ignores_left_padding(finetuned, bundle):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = AutoModelForCausalLM.from_pretrained(finetuned), AutoTokenizer.from_pretrained(finetuned)
    prompts = sft_dataset(bundle.eval_splits["forget"]).select(range(6))["prompt"]
    batched = generate_answers(model, tokenizer, prompts, max_new_tokens=30, batch_size=6)
    single = [generate_answers(model, tokenizer, [p], max_new_tokens=30, batch_size=1)[0] for p in prompts]
    assert batched == single
    # The fine-tuned model answers its own questions.
    recall = rouge_l(batched, bundle.eval_splits["forget"].select(range(6))["answer"])["recall"]
    assert recall.mean() > 0.5


def test_mismatched_lengths_are_rejected():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        rouge_l(["a", "b"], ["a"])
