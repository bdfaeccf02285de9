"""Shared fixtures: tiny generated data, a tokenizer trained on it, tiny models; no network, no GPU."""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")
# The models commands cache when given no --cache_dir go to a cache of this session's own, never the user's: a test
# then builds what it needs as on a fresh machine, and leaves nothing behind.
os.environ["RLUNLEARN_CACHE"] = tempfile.mkdtemp(prefix="rlunlearn-test-cache-")
atexit.register(shutil.rmtree, os.environ["RLUNLEARN_CACHE"], ignore_errors=True)

import pytest  # noqa: E402

from rlunlearn.data import generate_authors  # noqa: E402
from rlunlearn.models import build_model, train_tokenizer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# Training arguments every test run shares: a log entry per step, no checkpoints, no reporting, one seed.
QUIET_TRAINING = dict(logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True, seed=0)
# The same for the example scripts, on the data of the `bundle` fixture.
SCRIPT_ARGS = (
    "--num_authors 4 --num_forget_authors 1 --gradient_accumulation_steps 1 --save_strategy no --logging_steps 1 "
    "--disable_tqdm true --seed 0"
).split()


def mean_probability(model, tokenizer, dataset) -> float:
    """Mean answer probability (TOFU's) of a prompt/completion dataset under `model`."""
    from rlunlearn.evaluation import metrics, score_answers

    scores = score_answers(model, tokenizer, dataset["prompt"], dataset["completion"])
    return float(metrics.probability([s.mean_logp for s in scores]).mean())


def tofu_folder() -> Path | None:
    """The local TOFU copy: $RLUNLEARN_TOFU_DIR, or ../shared/data/tofu beside the checkout."""
    candidates = (os.environ.get("RLUNLEARN_TOFU_DIR"), REPO.parent / "shared" / "data" / "tofu")
    for candidate in candidates:
        if candidate and (Path(candidate) / "full.json").is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def tofu_dir() -> Path:
    folder = tofu_folder()
    if folder is None:
        pytest.skip("no local TOFU copy: set RLUNLEARN_TOFU_DIR or place it in ../shared/data/tofu")
    return folder


@pytest.fixture(scope="session")
def bundle():
    """Four generated authors, one of them to forget."""
    return generate_authors(num_authors=4, num_forget=1, seed=0)


@pytest.fixture(scope="session")
def tokenizer(bundle):
    return train_tokenizer(bundle.corpus(), vocab_size=512)


@pytest.fixture
def tiny_model(tokenizer):
    return build_model(tokenizer, "tiny", seed=0)


@pytest.fixture(scope="session")
def finetuned(tmp_path_factory, bundle, tokenizer):
    """A tiny model fine-tuned on every author of `bundle` (the target model of the tests), saved with its tokenizer."""
    from rlunlearn.data import PromptFormat
    from rlunlearn.finetune import FinetuneConfig, finetune, training_data

    path = tmp_path_factory.mktemp("finetuned")
    config = FinetuneConfig(
        output_dir=str(path),
        learning_rate=5e-3,
        num_train_epochs=25,
        report_to="none",
        disable_tqdm=True,
        logging_steps=10_000,
        seed=0,
    )
    finetune(
        build_model(tokenizer, "tiny", seed=0),
        tokenizer,
        training_data(bundle, "target", PromptFormat(), False),
        config,
    )
    return path


@pytest.fixture(scope="session")
def attributor(tmp_path_factory, finetuned, bundle, tokenizer):
    """An attribution classifier (the forget author, `retain`, `none`) on the fine-tuned tiny model, saved."""
    from transformers import TrainingArguments, set_seed
    from trl import ModelConfig

    from rlunlearn.attribution import classifier_from_lm
    from rlunlearn.data import attribution_dataset
    from rlunlearn.rewards import train_classifier

    path = tmp_path_factory.mktemp("attributor")
    train, held_out, labels = attribution_dataset(bundle, retain_labels="one")
    set_seed(0)  # the classification head is initialised here: the same classifier whatever tests ran before
    model = classifier_from_lm(ModelConfig(model_name_or_path=str(finetuned)), labels)
    args = TrainingArguments(
        output_dir=str(path / "checkpoints"),
        learning_rate=1e-3,
        num_train_epochs=3,
        per_device_train_batch_size=16,
        warmup_steps=0.1,
        lr_scheduler_type="cosine",
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=10_000,
        seed=0,
    )
    classifier, metrics = train_classifier(model, tokenizer, train, held_out, args)
    classifier.save_pretrained(str(path))
    return classifier, metrics, path
