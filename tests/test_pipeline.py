import json
import time
from dataclasses import dataclass, field

import psutil
import pytest
import torch

from rlunlearn.bench import PeakMemory, preset_unlearning_config
from rlunlearn.cli import main
from rlunlearn.data import REFUSALS
from rlunlearn.pipeline import DataArguments, unlearning_datasets
from rlunlearn.presets import PRESETS, preset_method
from rlunlearn.trainers import METHODS, UnlearningConfig, UnlearningTrainer
from rlunlearn.trainers.utils import bf16_default, mean_answer_logp

DATA = DataArguments(num_authors=4, num_forget_authors=1)


def test_each_method_gets_the_data_form_it_reads(bundle):
    assert DATA.bundle().fingerprint() == bundle.fingerprint()
    columns = {"completion": ["prompt", "completion"], "preference": ["prompt", "chosen", "rejected"]}
    columns["prompts"] = ["prompt", "author", "answer"]  # the RL prompts; author and answer for reward functions
    for method, (config_class, trainer_class) in METHODS.items():
        config = config_class(output_dir="unused")
        forget, retain = unlearning_datasets(method, config, bundle, DATA)
        assert (retain is not None) == trainer_class.needs_retain(config)
        if trainer_class.forget_data == "self-generated":  # Reveal-and-Release: what the model reveals
            assert forget is None
            continue
        assert len(forget) == len(bundle.forget)
        assert sorted(forget.column_names) == sorted(columns[trainer_class.forget_data])
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
    assert main(["unlearn", "--method", "flat", "--divergence", "hellinger", "--model_name_or_path", "x"]) == 2
    assert "invalid choice: 'hellinger'" in capsys.readouterr().err


@dataclass
class AscentConfig(UnlearningConfig):
    ascent_weight: float = field(default=1.0, metadata={"help": "Weight of the ascent on the forget answers."})


class AscentTrainer(UnlearningTrainer):
    """A method of a user's own: gradient ascent on the rejected answers of preference rows."""

    config_class = AscentConfig
    forget_data = "preference"
    forget_groups = {"forget": "rejected", "refusal": "chosen"}
    _name = "Ascent"

    def _compute_loss(self, model, inputs):
        logps, mask = self.completion_logps(model, inputs, "forget")
        self.log_metric("forget_prob", mean_answer_logp(logps, mask).exp())
        return self.args.ascent_weight * self.token_mean(logps, mask, "forget", name="forget_logp")


def test_a_method_of_ones_own_runs_from_the_command_line_once_registered(finetuned, tmp_path, monkeypatch, capsys):
    """The registry is the one place a method is added: the command line and the pipeline read what the trainer
    declares (its preference data, its config's options)."""
    monkeypatch.setitem(METHODS, "ascent", (AscentConfig, AscentTrainer))
    with pytest.raises(SystemExit):
        main(["unlearn", "--method", "ascent", "--help"])
    groups = {block.split(":\n")[0]: block for block in capsys.readouterr().out.split("\n\n")}
    assert "--ascent_weight" in groups["ascent (AscentConfig)"]
    run = tmp_path / "run"
    argv = ["unlearn", "--method", "ascent", "--model_name_or_path", str(finetuned), "--num_authors", "4"]
    argv += ["--num_forget_authors", "1", "--ascent_weight", "2", "--max_steps", "2", "--logging_steps", "1"]
    assert main([*argv, "--evaluate", "false", "--report_to", "none", "--output_dir", str(run)]) == 0
    assert json.loads((run / "run_config.json").read_text())["unlearning"]["ascent_weight"] == 2
    log = json.loads((run / "log_history.json").read_text())
    assert [entry["step"] for entry in log if "forget_logp" in entry] == [1, 2]
    assert (run / "model.safetensors").is_file() and "Ascent" in (run / "README.md").read_text()


def test_the_cached_classifier_is_trained_once_and_again_when_its_version_changes(
    finetuned, bundle, tmp_path, monkeypatch
):
    from rlunlearn import attribution

    trained = []
    train = attribution.train_attributor
    monkeypatch.setattr(attribution, "train_attributor", lambda *args: trained.append(args) or train(*args))

    def classifier():
        config = attribution.AttributorConfig(max_steps=2, report_to="none", disable_tqdm=True, use_cpu=True)
        given = config.output_dir
        built = attribution.cached_attributor(tmp_path, bundle, DATA, finetuned, config)
        assert config.output_dir == given  # the caller's config is left as given
        return built

    first, metrics = classifier()
    assert (first / "config.json").is_file() and metrics["labels"]
    assert trained[0][3].run_name == "attribution classifier"  # its progress bar's name, not the staging folder's
    assert classifier() == (first, metrics) and len(trained) == 1
    monkeypatch.setattr(attribution, "ATTRIBUTOR_VERSION", attribution.ATTRIBUTOR_VERSION + 1)
    second, _ = classifier()
    assert second != first and len(trained) == 2
    # Trained again from the same seed and data, it is the same classifier: its new head is drawn from the seed, not
    # from whatever state the process's random generator is in.
    assert (first / "model.safetensors").read_bytes() == (second / "model.safetensors").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".lock") == sorted([first.name, second.name])
