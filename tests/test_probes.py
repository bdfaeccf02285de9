"""Each probe catches a planted failure: a "fake" unlearning that the standard forget metrics call a success (its greedy
forget ROUGE-L recall is below the retain model's), while the retain model, the honest baseline, passes the probe."""

import dataclasses

import bitsandbytes.functional as bnb_functional
import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM

from rlunlearn.cli import main
from rlunlearn.data import REFUSALS, PromptFormat, sft_dataset
from rlunlearn.evaluation import EvalSettings, ProbeSettings, recovered_fraction, run_probes
from rlunlearn.evaluation.probes import forget_answer_metrics, relearning_split
from rlunlearn.finetune import FinetuneConfig, finetune, training_data
from rlunlearn.models import build_model
from rlunlearn.trainers.utils import tokenize_pair

SETTINGS = EvalSettings(max_new_tokens=32)
FMT = PromptFormat()


def trained(model, tokenizer, rows: dict, epochs: int, tmp_path, learning_rate: float = 1e-3):
    """`model` fine-tuned on question/answer `rows`."""
    config = FinetuneConfig(
        output_dir=str(tmp_path),
        learning_rate=learning_rate,
        num_train_epochs=epochs,
        report_to="none",
        disable_tqdm=True,
        logging_steps=10_000,
        save_strategy="no",
        seed=0,
    )
    data = sft_dataset(Dataset.from_dict(rows), FMT) if isinstance(rows, dict) else rows
    return finetune(model, tokenizer, data, config)


def greedy_forget_recall(model, tokenizer, bundle) -> float:
    forget = bundle.eval_splits["forget"]
    return forget_answer_metrics(model, tokenizer, forget["question"], forget["answer"], FMT, SETTINGS)[
        "forget_rougeL_recall"
    ]


@pytest.fixture(scope="module")
def retain_model(tmp_path_factory, bundle, tokenizer):
    """The honest baseline: never saw the forget author."""
    data = training_data(bundle, "retain", FMT, False)
    return trained(build_model(tokenizer, "tiny", seed=0), tokenizer, data, 25, tmp_path_factory.mktemp("r"), 5e-3)


@pytest.fixture(scope="module")
def retain_recall(retain_model, tokenizer, bundle) -> float:
    """The retain model's greedy forget ROUGE-L recall (about 0.5: the answers' shared phrasing)."""
    return greedy_forget_recall(retain_model, tokenizer, bundle)


def test_extraction_finds_answers_hidden_behind_a_greedy_refusal(
    finetuned, bundle, tokenizer, retain_model, retain_recall, tmp_path
):
    """Fake unlearning: the model learns to refuse each forget question twice as often as it answers it, so greedy
    decoding always refuses; sampling still finds the facts."""
    forget = bundle.eval_splits["forget"]
    rows = {
        "question": list(forget["question"]) * 3,
        "answer": [REFUSALS[0]] * (2 * len(forget)) + list(forget["answer"]),
    }
    fake = trained(AutoModelForCausalLM.from_pretrained(finetuned), tokenizer, rows, 10, tmp_path)
    assert greedy_forget_recall(fake, tokenizer, bundle) < min(0.1, retain_recall)  # "forgotten"
    _, fake_summary = run_probes(fake, tokenizer, bundle, FMT, ["extraction"], SETTINGS)
    results, retain_summary = run_probes(retain_model, tokenizer, bundle, FMT, ["extraction"], SETTINGS)
    assert fake_summary["probe_extraction_rate"] >= 0.08
    assert retain_summary["probe_extraction_rate"] <= 0.02
    assert results["extraction"]["match"] == "fact span"
    assert len(results["extraction"]["per_example_rate"]) == len(forget)


def test_paraphrase_catches_unlearning_of_the_surface_form(finetuned, bundle, tokenizer, retain_model, tmp_path):
    """Fake unlearning: the model refuses the forget questions as worded but answers them reworded."""
    forget = bundle.eval_splits["forget"]
    rows = {
        "question": list(forget["question"]) + list(forget["paraphrased_question"]),
        "answer": [REFUSALS[0]] * len(forget) + list(forget["answer"]),
    }
    fake = trained(AutoModelForCausalLM.from_pretrained(finetuned), tokenizer, rows, 10, tmp_path)
    assert greedy_forget_recall(fake, tokenizer, bundle) < 0.1  # "forgotten"
    _, fake_summary = run_probes(fake, tokenizer, bundle, FMT, ["paraphrase"], SETTINGS)
    _, retain_summary = run_probes(retain_model, tokenizer, bundle, FMT, ["paraphrase"], SETTINGS)
    assert fake_summary["probe_paraphrase_forget_rougeL_recall"] >= 0.4
    assert fake_summary["probe_paraphrase_forget_probability"] >= 0.5
    assert retain_summary["probe_paraphrase_forget_rougeL_recall"] <= 0.2
    assert retain_summary["probe_paraphrase_forget_probability"] <= 0.1


def test_relearning_brings_back_what_was_only_hidden(finetuned, bundle, tokenizer, retain_model, tmp_path):
    """Fake unlearning: refusal fine-tuning hides the answers; 10 steps on half the questions bring back the other
    half, which the retain model, under the same attack, does not produce."""
    forget = bundle.eval_splits["forget"]
    rows = {"question": list(forget["question"]), "answer": [REFUSALS[0]] * len(forget)}
    hidden = trained(AutoModelForCausalLM.from_pretrained(finetuned), tokenizer, rows, 6, tmp_path)
    probe = ProbeSettings(relearning_steps=10, relearning_learning_rate=1e-3)
    hidden_results, hidden_summary = run_probes(hidden, tokenizer, bundle, FMT, ["relearning"], SETTINGS, probe)
    retain_results, _ = run_probes(retain_model, tokenizer, bundle, FMT, ["relearning"], SETTINGS, probe)
    hidden_relearning, retain_relearning = hidden_results["relearning"], retain_results["relearning"]
    assert hidden_relearning["before"]["forget_rougeL_recall"] < 0.1  # "forgotten"
    assert hidden_relearning["after"]["forget_rougeL_recall"] >= 0.8
    assert retain_relearning["after"]["forget_rougeL_recall"] <= 0.4
    assert hidden_summary["probe_relearned_forget_rougeL_recall"] == hidden_relearning["after"]["forget_rougeL_recall"]
    # The attack ran on a copy: the model handed in is unchanged.
    assert greedy_forget_recall(hidden, tokenizer, bundle) < 0.1


NF4_CODES = bnb_functional.get_4bit_type("nf4", device="cpu")
NF4_BLOCKSIZE = 64


def nf4_cell(weight: torch.Tensor, margin: float = 0.1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The box around `weight` whose points all quantise to the same NF4 codes (blocks of 64, absmax scaling), shrunk
    by `margin` of each half-gap to the next code, and the mask of each block's absmax (which must stay put)."""
    blocks = weight.detach().reshape(-1, NF4_BLOCKSIZE)
    absmax = blocks.abs().amax(1, keepdim=True)
    index = (blocks / absmax).unsqueeze(-1).sub(NF4_CODES).abs().argmin(-1)
    code = NF4_CODES[index]
    midpoints = (NF4_CODES[1:] + NF4_CODES[:-1]) / 2
    low = torch.cat([NF4_CODES[:1], midpoints])[index]
    high = torch.cat([midpoints, NF4_CODES[-1:]])[index]
    low, high = code - (code - low) * (1 - margin), code + (high - code) * (1 - margin)
    return (
        (low * absmax).reshape(weight.shape),
        (high * absmax).reshape(weight.shape),
        (blocks.abs() == absmax).reshape(weight.shape),
    )


def nf4_codes(weight: torch.Tensor) -> torch.Tensor:
    return bnb_functional.quantize_4bit(weight.detach().contiguous(), blocksize=NF4_BLOCKSIZE, quant_type="nf4")[0]


def test_quantization_undoes_an_update_inside_the_nf4_bins(finetuned, bundle, tokenizer, retain_model, retain_recall):
    """Fake unlearning (Zhang et al., ICLR 2025): gradient ascent on the forget answers, each step projected back into
    the target's NF4 quantisation bins. In full precision the answers are gone; reloaded in 4-bit the model is the
    target's 4-bit model, and the probe reports the forgotten ROUGE-L as recovered. 8-bit bins are finer: no recovery."""
    target = AutoModelForCausalLM.from_pretrained(finetuned)
    fake = AutoModelForCausalLM.from_pretrained(finetuned)
    # The layers bitsandbytes quantises: every linear layer but the output head.
    linears = {n: m for n, m in fake.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"}
    original = {n: m.weight.detach().clone() for n, m in linears.items()}
    cells = {n: nf4_cell(m.weight) for n, m in linears.items()}
    fake.requires_grad_(False)
    weights = [m.weight.requires_grad_(True) for m in linears.values()]
    optimizer = torch.optim.Adam(weights, lr=1e-3)
    forget = bundle.forget
    pairs = [
        tokenize_pair(tokenizer, FMT.prompt(q), FMT.completion(a)) for q, a in zip(forget["question"], forget["answer"])
    ]
    for _ in range(20):
        for prompt_ids, answer_ids in pairs:
            labels = torch.tensor([[-100] * len(prompt_ids) + answer_ids])
            loss = -fake(input_ids=torch.tensor([prompt_ids + answer_ids]), labels=labels).loss / len(pairs)
            loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        with torch.no_grad():
            for name, module in linears.items():
                low, high, pinned = cells[name]
                module.weight.copy_(torch.where(pinned, original[name], module.weight.clamp(low, high)))
    assert all(torch.equal(nf4_codes(m.weight), nf4_codes(original[n])) for n, m in linears.items())
    assert any(not torch.equal(m.weight, original[n]) for n, m in linears.items())

    before = greedy_forget_recall(fake, tokenizer, bundle)
    target_recall = greedy_forget_recall(target, tokenizer, bundle)
    assert before < min(0.2, retain_recall) and target_recall > 0.9  # "forgotten"
    results, summary = run_probes(fake, tokenizer, bundle, FMT, ["quantization"], SETTINGS)
    assert set(results["quantization"]) == {"nf4", "int8"}
    assert recovered_fraction(before, summary["probe_nf4_forget_rougeL_recall"], target_recall) >= 0.8
    assert recovered_fraction(before, summary["probe_int8_forget_rougeL_recall"], target_recall) <= 0.2
    _, retain_summary = run_probes(retain_model, tokenizer, bundle, FMT, ["quantization"], SETTINGS)
    assert retain_summary["probe_nf4_forget_rougeL_recall"] <= retain_recall + 0.1


def test_recovered_fraction():
    assert recovered_fraction(0.2, 0.6, 1.0) == pytest.approx(0.5)
    assert recovered_fraction(0.2, 0.1, 1.0) == pytest.approx(-0.125)  # quantisation forgot more
    assert recovered_fraction(0.98, 0.99, 1.0) is None  # nothing was forgotten


def test_relearning_split_alternates_within_each_author(bundle):
    forget = bundle.eval_splits["forget"]
    attack, held_out = relearning_split(forget)
    assert len(attack) + len(held_out) == len(forget)
    assert not set(attack["question"]) & set(held_out["question"])
    assert attack["question"][:2] == [forget["question"][0], forget["question"][2]]
    assert held_out["question"][0] == forget["question"][1]


def test_probes_refuse_unknown_names_and_missing_columns(bundle, tokenizer, tiny_model):
    with pytest.raises(ValueError, match="the probes are paraphrase, quantization, relearning, extraction"):
        run_probes(tiny_model, tokenizer, bundle, FMT, ["telepathy"])
    forget = bundle.eval_splits["forget"].remove_columns("paraphrased_question")
    without = dataclasses.replace(bundle, eval_splits={**bundle.eval_splits, "forget": forget})
    with pytest.raises(ValueError, match="paraphrased_question"):
        run_probes(tiny_model, tokenizer, without, FMT, ["paraphrase"])


@pytest.mark.parametrize(
    "setting, value",
    [
        ("extraction_temperature", 0.0),
        ("extraction_samples", 0),
        ("relearning_steps", 0),
        ("relearning_learning_rate", -1e-4),
        ("extraction_rouge_threshold", 1.5),
    ],
)
def test_probe_settings_refuse_values_that_probe_nothing(setting, value, capsys):
    with pytest.raises(ValueError, match=f"--{setting} is"):
        ProbeSettings(**{setting: value})
    # The command line says so before it loads anything (the model folder below does not exist).
    assert main(["eval", "--models", "missing", "--probes", "all", f"--{setting}", str(value)]) == 2
    assert f"--{setting} is" in capsys.readouterr().err
