import time

import psutil
import pytest
import torch

from rlunlearn.bench import PRESETS, PeakMemory, preset_method, preset_unlearning_config
from rlunlearn.cli import main
from rlunlearn.data import REFUSALS
from rlunlearn.pipeline import DataArguments, unlearning_datasets
from rlunlearn.trainers import METHODS
from rlunlearn.trainers.utils import bf16_default

DATA = DataArguments(num_authors=4, num_forget_authors=1)


def test_each_method_gets_the_data_form_it_reads(bundle):
    assert DATA.bundle().fingerprint() == bundle.fingerprint()
    for method, (config_class, trainer_class) in METHODS.items():
        config = config_class(output_dir="unused")
        forget, retain = unlearning_datasets(method, config, bundle, DATA)
        if method == "reveal_release":  # its forget set is what the model reveals; retain data for its retain module
            assert forget is None and retain is not None
            continue
        assert len(forget) == len(bundle.forget)
        if method == "dareu":
            assert forget.column_names == ["prompt", "author", "answer"] and retain is not None
            continue
        assert set(trainer_class.forget_groups.values()) <= set(forget.column_names)
        assert (retain is not None) == trainer_class.needs_retain(config)
    flat, _ = unlearning_datasets("flat", METHODS["flat"][0](output_dir="unused"), bundle, DATA)
    assert all(chosen.strip() in REFUSALS for chosen in flat["chosen"])


def test_rl_prompts_can_add_the_paraphrased_questions(bundle):
    data = DataArguments(num_authors=4, num_forget_authors=1, paraphrased_prompts=True)
    prompts, _ = unlearning_datasets("dareu", METHODS["dareu"][0](output_dir="unused"), bundle, data)
    count = len(bundle.forget)
    assert len(prompts) == 2 * count
    paraphrased = bundle.eval_splits["forget"]["paraphrased_question"]
    assert [data.prompt_format().prompt(q) for q in paraphrased] == prompts["prompt"][count:]
    assert prompts["author"][count:] == bundle.forget["author"] and prompts["answer"][count:] == bundle.forget["answer"]


def test_preference_methods_can_prefer_an_alternative_answer(bundle):
    data = DataArguments(num_authors=4, num_forget_authors=1, preference_chosen="perturbed")
    flat, _ = unlearning_datasets("flat", METHODS["flat"][0](output_dir="unused"), bundle, data)
    for chosen, row in zip(flat["chosen"], bundle.eval_splits["forget"]):
        assert chosen.strip() in row["perturbed_answer"]
    assert flat["rejected"] == [" " + a for a in bundle.forget["answer"]]


def test_every_method_has_settings_in_every_preset():
    for preset in PRESETS:
        assert {preset_method(preset, row) for row in PRESETS[preset]["unlearning"]} == set(METHODS)
        for row in PRESETS[preset]["unlearning"]:
            assert preset_unlearning_config(preset, row, output_dir="unused").bf16 == bf16_default()
        # DareU runs its paper's algorithm; GRPO is a second row.
        assert preset_unlearning_config(preset, "dareu", output_dir="unused").algorithm == "ppo"
        assert preset_unlearning_config(preset, "dareu-grpo", output_dir="unused").algorithm == "grpo"
    # `bench tune` tries learning rates for every row, variants included.
    assert set(PRESETS["cpu"]["grid"]) == set(PRESETS["cpu"]["unlearning"])
    config = preset_unlearning_config("cpu", "flat", output_dir="unused")
    assert config.learning_rate == PRESETS["cpu"]["unlearning"]["flat"]["learning_rate"]
    assert config.divergence == "kl" and config.gradient_accumulation_steps == 1
    # FLAT's own default, on the gpu preset: total variation, as its official code's TOFU configuration.
    assert preset_unlearning_config("gpu", "flat", output_dir="unused").divergence == "tv"
    # The gpu preset: open-unlearning's TOFU settings (1e-5, 10 epochs, batch 8 x 4).
    config = preset_unlearning_config("gpu", "npo", output_dir="unused")
    assert (config.learning_rate, config.num_train_epochs, config.gradient_accumulation_steps) == (1e-5, 10, 4)


def test_peak_memory_sees_an_allocation():
    cuda = torch.cuda.is_available()
    before = torch.cuda.memory_allocated() if cuda else psutil.Process().memory_info().rss
    with PeakMemory() as peak:
        block = torch.ones(64 * 2**20 // 4, device="cuda" if cuda else "cpu")  # 64 MB
        time.sleep(0.1)  # on a CPU the resident size is sampled every 20 ms
        del block
    assert peak.peak_bytes >= before + 48 * 2**20


def test_method_options_on_the_command_line(capsys):
    with pytest.raises(SystemExit):
        main(["unlearn", "--method", "flat", "--help"])
    out = capsys.readouterr().out
    assert "--divergence" in out and "--averaging" in out and "--preference_chosen" in out
    with pytest.raises(SystemExit):
        main(["unlearn", "--method", "flat", "--divergence", "hellinger", "--model_name_or_path", "x"])
    assert "invalid choice: 'hellinger'" in capsys.readouterr().err
