import subprocess
import threading
import time

import pytest
import torch
from transformers import AutoModelForCausalLM
from trl import ModelConfig

from rlunlearn import pipeline
from rlunlearn.cache import cached_build, entry_key, entry_threads
from rlunlearn.data import PromptFormat, sft_dataset
from rlunlearn.evaluation import score_answers
from rlunlearn.finetune import FinetuneConfig, finetune, training_data
from rlunlearn.models import build_model, load_tokenizer
from rlunlearn.pipeline import DataArguments, ScratchModelArguments, prepare_models


def answer_nll(model, tokenizer, dataset) -> float:
    scores = score_answers(model, tokenizer, dataset["prompt"], dataset["completion"])
    return -sum(s.logps.sum() for s in scores) / sum(len(s.logps) for s in scores)


def test_training_data_of_target_and_retain_models(bundle):
    fmt = PromptFormat()
    target, retain = training_data(bundle, "target", fmt, False), training_data(bundle, "retain", fmt, True)
    assert len(target) == len(bundle.forget) + len(bundle.retain)
    assert len(retain) == len(bundle.retain) + len(bundle.background)
    forget_prompts = set(sft_dataset(bundle.forget)["prompt"])
    assert forget_prompts <= set(target["prompt"]) and not forget_prompts & set(retain["prompt"])


def test_finetuning_lowers_the_answer_loss(finetuned, bundle, tokenizer):
    data = sft_dataset(bundle.forget).select(range(10))
    before = answer_nll(build_model(tokenizer, "tiny", seed=0), tokenizer, data)
    after = answer_nll(AutoModelForCausalLM.from_pretrained(finetuned), tokenizer, data)
    assert after < 0.25 * before


def test_target_and_retain_models_are_cached_each_on_its_own(tmp_path, monkeypatch):
    data_args = DataArguments(data="generated", num_authors=3, num_forget_authors=1)
    bundle = data_args.bundle()
    scratch = ScratchModelArguments(from_scratch=True, model_preset="tiny", vocab_size=300)
    config = FinetuneConfig(
        output_dir=str(tmp_path / "unused"), num_train_epochs=1, report_to="none", disable_tqdm=True
    )
    trained = []
    finetune_model = pipeline.finetune_model

    def counting(*args, **kwargs):
        trained.append(args[5])
        return finetune_model(*args, **kwargs)

    monkeypatch.setattr(pipeline, "finetune_model", counting)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        first = prepare_models(bundle, data_args, ModelConfig(), scratch, config, tmp_path / "cache")
    finally:
        torch.set_num_threads(threads)
    assert not first.reused and trained == ["target", "retain"]
    # The thread count each was built on is recorded: another count gives slightly different weights.
    assert entry_threads(first.target) == entry_threads(first.retain) == 1
    assert (first.target / "config.json").is_file() and (first.retain / "config.json").is_file()
    assert first.target != first.retain

    second = prepare_models(bundle, data_args, ModelConfig(), scratch, config, tmp_path / "cache")
    assert second.reused and (second.target, second.retain) == (first.target, first.retain)
    assert trained == ["target", "retain"]
    # Any setting that changes the weights is part of the key.
    changed = FinetuneConfig(output_dir=str(tmp_path / "unused"), num_train_epochs=2, report_to="none")
    prepare_models(bundle, data_args, ModelConfig(), scratch, changed, tmp_path / "cache")
    assert trained == ["target", "retain"] * 2


def test_an_interrupted_run_keeps_the_model_it_finished_and_what_killed_runs_left_is_removed(tmp_path, monkeypatch):
    data_args = DataArguments(data="generated", num_authors=3, num_forget_authors=1)
    bundle = data_args.bundle()
    scratch = ScratchModelArguments(from_scratch=True, model_preset="tiny", vocab_size=300)
    config = FinetuneConfig(output_dir=str(tmp_path / "unused"), max_steps=1, report_to="none", disable_tqdm=True)
    finetune_model = pipeline.finetune_model
    models = tmp_path / "cache" / "models"
    staged = []

    def interrupted_at_the_retain_model(*args, **kwargs):
        staged.append(args[6])
        if args[5] == "retain":
            (args[6] / "half-written").parent.mkdir(parents=True, exist_ok=True)
            (args[6] / "half-written").write_text("")
            raise KeyboardInterrupt
        return finetune_model(*args, **kwargs)

    monkeypatch.setattr(pipeline, "finetune_model", interrupted_at_the_retain_model)
    with pytest.raises(KeyboardInterrupt):
        prepare_models(bundle, data_args, ModelConfig(), scratch, config, tmp_path / "cache")
    # The interrupted fine-tune removed its staging folder (the lock files of the builds stay).
    (target,) = [entry for entry in models.iterdir() if entry.suffix != ".lock"]
    assert "-target-" in target.name and (target / "complete.json").is_file()

    # What killed runs left: this version's staging folder of the retain model, and an earlier version's
    # `<entry>.tmp-<pid>` whose process is gone.
    dead = subprocess.Popen(["true"])
    dead.wait()
    for leftover in (staged[-1], models / f"{bundle.name}-0123456789abcdef.tmp-{dead.pid}"):
        (leftover / "half-written").parent.mkdir(parents=True)
        (leftover / "half-written").write_text("")

    resumed = []
    monkeypatch.setattr(pipeline, "finetune_model", lambda *a, **k: resumed.append(a[5]) or finetune_model(*a, **k))
    prepared = prepare_models(bundle, data_args, ModelConfig(), scratch, config, tmp_path / "cache")
    # The target was kept; the retain model was trained again, from a clean folder, and nothing half-made is left.
    assert resumed == ["retain"] and not (prepared.retain / "half-written").exists()
    assert sorted(p.name for p in models.iterdir() if p.suffix != ".lock") == sorted(
        [prepared.target.name, prepared.retain.name]
    )


def test_runs_in_parallel_build_a_cache_entry_once(tmp_path, capsys):
    # The second run asks for the entry while the first builds it: it waits, then reuses what the first built.
    folder, building, finish = tmp_path / "models" / "entry", threading.Event(), threading.Event()
    built, results = [], {}

    def build(staging):
        built.append(staging)
        staging.mkdir(parents=True)
        building.set()
        assert finish.wait(60)
        (staging / "weights").write_text("trained")

    def run(name):
        results[name] = cached_build(folder, {"setting": 1}, build)

    first = threading.Thread(target=run, args=("first",))
    first.start()
    assert building.wait(60)
    second = threading.Thread(target=run, args=("second",))
    second.start()
    printed = ""
    for _ in range(600):
        printed += capsys.readouterr().out
        if "Waiting for another run that is building" in printed:
            break
        time.sleep(0.05)
    assert "Waiting for another run that is building" in printed
    finish.set()
    first.join(60)
    second.join(60)
    assert len(built) == 1 and results == {"first": (folder, False), "second": (folder, True)}
    assert (folder / "weights").read_text() == "trained" and entry_key(folder) == {"setting": 1}


def test_target_and_retain_models_start_from_a_checkpoint(finetuned, tmp_path):
    # As the gpu bench preset does: a pretrained checkpoint, chat prompts, the checkpoint's own tokenizer.
    data_args = DataArguments(num_authors=4, num_forget_authors=1, prompt_style="chat")
    bundle = data_args.bundle()
    config = FinetuneConfig(
        output_dir=str(tmp_path / "unused"), num_train_epochs=1, report_to="none", disable_tqdm=True
    )
    checkpoint = ModelConfig(model_name_or_path=str(finetuned))
    prepared = prepare_models(bundle, data_args, checkpoint, ScratchModelArguments(), config, tmp_path / "cache")
    key = entry_key(prepared.target)
    # A pretrained model already knows the world: only the authors are trained.
    assert key["base"] == str(finetuned) and key["background"] is False
    start = AutoModelForCausalLM.from_pretrained(finetuned).state_dict()
    for path in (prepared.target, prepared.retain):
        assert load_tokenizer(str(path)).get_vocab() == load_tokenizer(str(finetuned)).get_vocab()
        weights = AutoModelForCausalLM.from_pretrained(path).state_dict()
        assert weights.keys() == start.keys()
        assert any(not torch.equal(weights[name], start[name]) for name in start)


def test_finetuned_model_is_a_plain_model_safe_to_copy(tmp_path, bundle, tokenizer):
    """TRL patches the forward of the models it trains; a copy of a patched model would run the original's weights.
    finetune hands back a plain model, so a copy is independent of it (as a reference model must be)."""
    import copy

    import torch

    config = FinetuneConfig(output_dir=str(tmp_path), num_train_epochs=1, report_to="none", disable_tqdm=True)
    model = finetune(
        build_model(tokenizer, "tiny"), tokenizer, training_data(bundle, "retain", PromptFormat(), False), config
    )
    clone = copy.deepcopy(model)
    ids = torch.tensor([tokenizer("Question: Who?\nAnswer:").input_ids])
    with torch.no_grad():
        before = model(ids).logits
        for param in clone.parameters():
            param.zero_()
        assert not torch.allclose(clone(ids).logits, before)
        torch.testing.assert_close(model(ids).logits, before)
