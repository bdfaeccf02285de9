"""The offline base: pretraining lowers the loss on its corpus, resumes after an interruption, and is cached."""

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM
from trl import ModelConfig

from rlunlearn import pretrain as pretrain_module
from rlunlearn.data import generate_authors, sft_dataset
from rlunlearn.evaluation import score_answers
from rlunlearn.models import build_model, load_tokenizer
from rlunlearn.pipeline import DataArguments, ScratchModelArguments, offline_base, with_background
from rlunlearn.pretrain import PretrainConfig, cached_base, is_offline_base, pretrain, pretraining_corpus


@pytest.fixture(scope="module")
def corpus() -> Dataset:
    return pretraining_corpus(DataArguments(data="generated", num_authors=4, num_forget_authors=1)).select(range(96))


def config(path, **overrides) -> PretrainConfig:
    values = dict(
        output_dir=str(path),
        learning_rate=3e-3,
        max_steps=12,
        per_device_train_batch_size=8,
        save_steps=4,
        report_to="none",
        disable_tqdm=True,
        seed=0,
    )
    return PretrainConfig(**{**values, **overrides})


def whole_text_nll(model, tokenizer, rows) -> float:
    """Mean loss on question and answer tokens (the answer scored after an empty prompt start)."""
    data = sft_dataset(rows)
    texts = [p + c for p, c in zip(data["prompt"], data["completion"])]
    scores = score_answers(model, tokenizer, [""] * len(texts), texts)
    return -sum(s.logps.sum() for s in scores) / sum(len(s.logps) for s in scores)


def test_pretraining_lowers_the_loss_on_the_whole_text(tmp_path, corpus):
    folder = pretrain(corpus, config(tmp_path / "base"), model_preset="tiny", vocab_size=300)
    tokenizer = load_tokenizer(str(folder))
    rows = corpus.select(range(16))
    before = whole_text_nll(build_model(tokenizer, "tiny", seed=0), tokenizer, rows)
    after = whole_text_nll(AutoModelForCausalLM.from_pretrained(folder), tokenizer, rows)
    assert after < 0.8 * before
    assert not list(folder.glob("checkpoint-*"))  # checkpoints go once the base is saved

    # Fine-tuning from the offline base replays the general knowledge by default (a base this small loses it
    # otherwise), as from scratch; from another checkpoint it does not, unless asked.
    data_args = DataArguments(data="generated")
    assert is_offline_base(str(folder)) and with_background(data_args, ModelConfig(model_name_or_path=str(folder)))
    assert with_background(data_args, ModelConfig())
    other = tmp_path / "checkpoint"
    AutoModelForCausalLM.from_pretrained(folder).save_pretrained(other)
    assert not with_background(data_args, ModelConfig(model_name_or_path=str(other)))
    assert not with_background(DataArguments(train_background=False), ModelConfig(model_name_or_path=str(folder)))


def test_an_interrupted_pretraining_resumes_to_the_uninterrupted_weights(tmp_path, corpus, monkeypatch):
    whole = pretrain(corpus, config(tmp_path / "whole"), model_preset="tiny", vocab_size=300)

    def interrupt_after_step_6(self, args, state, control, **kwargs):
        if state.global_step == 6:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(pretrain_module._StageProgress, "on_step_end", interrupt_after_step_6, raising=False)
        with pytest.raises(KeyboardInterrupt):
            pretrain(corpus, config(tmp_path / "resumed"), model_preset="tiny", vocab_size=300)
    assert (tmp_path / "resumed" / "checkpoint-4").is_dir()
    resumed = pretrain(corpus, config(tmp_path / "resumed"), model_preset="tiny", vocab_size=300)
    expected = AutoModelForCausalLM.from_pretrained(whole).state_dict()
    for name, weight in AutoModelForCausalLM.from_pretrained(resumed).state_dict().items():
        torch.testing.assert_close(weight, expected[name])


def test_the_base_is_cached_by_its_settings(tmp_path, corpus, monkeypatch):
    run_names = []
    build = pretrain_module.pretrain
    monkeypatch.setattr(
        pretrain_module, "pretrain", lambda c, staged, *a: run_names.append(staged.run_name) or build(c, staged, *a)
    )
    first, reused = cached_base(corpus, config("unused", max_steps=2), tmp_path, model_preset="tiny", vocab_size=300)
    assert not reused and (first / "config.json").is_file()
    assert run_names == ["base"]  # the progress bar's name, rather than the cache's staging folder
    monkeypatch.setattr(pretrain_module, "pretrain", lambda *a, **k: pytest.fail("the cached base was not reused"))
    again, reused = cached_base(corpus, config("elsewhere", max_steps=2), tmp_path, model_preset="tiny", vocab_size=300)
    assert reused and again == first
    with pytest.raises(pytest.fail.Exception, match="not reused"):
        cached_base(corpus, config("unused", max_steps=3), tmp_path, model_preset="tiny", vocab_size=300)


def test_the_generated_base_never_saw_the_data_it_is_fine_tuned_on(tmp_path, monkeypatch):
    data_args = DataArguments(data="generated", num_authors=4, num_forget_authors=1)
    seen = []
    monkeypatch.setattr(pretrain_module, "pretrain", lambda corpus, config, *a, **k: seen.append(corpus))
    monkeypatch.setattr(pretrain_module, "cached_build", lambda folder, key, build: (build(folder), (folder, False))[1])
    offline_base(data_args, ScratchModelArguments(model_preset="tiny"), tmp_path)
    bundle = generate_authors(4, 1)
    names = set(bundle.forget["author"]) | set(bundle.retain["author"]) | set(bundle.eval_splits["holdout"]["author"])
    texts = " ".join(row["question"] + " " + row["answer"] for row in seen[0])
    assert seen and not any(name in texts for name in names)
    assert offline_base(data_args, ScratchModelArguments(from_scratch=True), tmp_path) is None


def test_rlunlearn_pretrain_builds_the_base_that_bench_and_finetune_reuse(tmp_path, tofu_dir, monkeypatch):
    """`rlunlearn pretrain` at its defaults fills the cache entry that `bench` (cpu preset, TOFU) and `finetune`
    (generated data) then look up: the same corpus and settings, hence the same folder."""
    from rlunlearn import bench
    from rlunlearn.arguments import BenchArguments, CacheArguments
    from rlunlearn.cli import main

    folders = []
    # Each entry point's cache folder is recorded; nothing is built.
    monkeypatch.setattr(pretrain_module, "cached_build", lambda folder, key, build: (folders.append(folder), True))
    cache = ["--cache_dir", str(tmp_path)]
    assert main(["pretrain", "--data", "tofu", "--tofu_path", str(tofu_dir), *cache]) == 0
    bench._base_model(BenchArguments(tofu_path=str(tofu_dir)), CacheArguments(cache_dir=str(tmp_path)))
    assert main(["pretrain", *cache]) == 0
    offline_base(DataArguments(), ScratchModelArguments(), tmp_path)
    assert folders[0] == folders[1] and folders[2] == folders[3] and folders[0] != folders[2], folders
