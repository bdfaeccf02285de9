"""Loading causal LMs (full precision, bf16, 8-bit, 4-bit NF4 + LoRA) and building small ones offline.

User options arrive as TRL's `ModelConfig` (`--model_name_or_path`, `--dtype`, `--load_in_4bit`, `--use_peft`,
`--lora_r`, ...), and TRL's own `get_quantization_config`/`get_peft_config` turn them into `BitsAndBytesConfig` and
`LoraConfig`, so flags mean here exactly what they mean in TRL's scripts.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from accelerate import init_empty_weights
from peft import AutoPeftModelForCausalLM, LoraConfig
from peft.tuners.tuners_utils import check_target_module_exists
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    TrainingArguments,
)
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled, unset_hf_deepspeed_config
from trl import ModelConfig, get_quantization_config

from rlunlearn.trainers.utils import keep_4bit_trainable_on_cpu

from .arguments import MODEL_PRESETS

logger = logging.getLogger(__name__)

ARCHITECTURES = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
# A minimal chat template for the tokenizers trained here, so the conversational dataset form works offline too.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def train_tokenizer(
    corpus: Iterable[str], vocab_size: int = 4096, model_max_length: int = 1024
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `corpus`, with BOS/EOS/PAD and a chat template; deterministic."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS, *ROLE_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(corpus), trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, tokenizer.token_to_id(BOS))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=list(ROLE_TOKENS),
        model_max_length=model_max_length,
        chat_template=CHAT_TEMPLATE,
    )


def build_model(
    tokenizer: PreTrainedTokenizerBase, preset: str = "small", architecture: str = "llama", seed: int = 0
) -> PreTrainedModel:
    """A randomly initialised causal LM of the named size preset, sized to `tokenizer`."""
    if preset not in MODEL_PRESETS:
        raise ValueError(f"--model_preset {preset!r} is not one of {sorted(MODEL_PRESETS)}.")
    if architecture not in ARCHITECTURES:
        raise ValueError(f"--architecture {architecture!r} is not one of {sorted(ARCHITECTURES)}.")
    config_class, model_class = ARCHITECTURES[architecture]
    size = MODEL_PRESETS[preset]
    config = config_class(
        vocab_size=len(tokenizer),
        num_key_value_heads=size["num_attention_heads"],
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        **size,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def _check_source(name_or_path: str, option: str) -> None:
    """Fail early, naming the option, when a model or tokenizer cannot be found."""
    path = Path(name_or_path).expanduser()
    looks_local = name_or_path.startswith((".", "/", "~")) or path.exists() or name_or_path.count("/") > 1
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    if looks_local and not path.is_dir():
        raise FileNotFoundError(
            f"{option} {name_or_path!r}: no such directory. Give a folder saved by save_pretrained."
        )
    if not looks_local and offline and not path.is_dir():
        raise FileNotFoundError(
            f"{option} {name_or_path!r} is not a local folder and HF_HUB_OFFLINE is set, so it cannot be downloaded. "
            "Give a local folder, or unset HF_HUB_OFFLINE where the hub can be reached."
        )


def check_model_source(name_or_path: str, option: str = "--model_name_or_path") -> None:
    """Fail before loading, naming the option, when `name_or_path` cannot be a model: a path that is no folder, a
    folder that holds no saved model (neither config.json nor a LoRA adapter's adapter_config.json), or a hub id while
    offline."""
    _check_source(name_or_path, option)
    path = Path(name_or_path).expanduser()
    if path.is_dir() and not any((path / name).is_file() for name in ("config.json", "adapter_config.json")):
        raise FileNotFoundError(
            f"{option} {name_or_path!r} holds no saved model (no config.json): give a folder that save_pretrained "
            "wrote, e.g. runs/finetune-.../target from `rlunlearn finetune`."
        )


def check_lora_targets(model_args: ModelConfig) -> None:
    """Fail before loading when --lora_target_modules names a module the model does not have: its modules are read
    off a weightless copy built from its config (a LoRA adapter's folder, whose base loads with it, is not checked)."""
    targets = model_args.lora_target_modules
    path = model_args.model_name_or_path
    if not targets or targets in ("all-linear", ["all-linear"]) or (Path(path) / "adapter_config.json").is_file():
        return
    config = AutoConfig.from_pretrained(path, revision=model_args.model_revision)
    with init_empty_weights():
        skeleton = AutoModelForCausalLM.from_config(config)
    names = [name for name, _ in skeleton.named_modules()]
    # A single target is a regular expression to peft, a list holds module names.
    candidates = [targets] if isinstance(targets, str) else list(targets)
    unmatched = [
        target
        for target in candidates
        if not any(
            check_target_module_exists(LoraConfig(target_modules=target if isinstance(targets, str) else [target]), n)
            for n in names
        )
    ]
    if unmatched:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in skeleton.named_modules() if isinstance(m, torch.nn.Linear)})
        pattern = " (one target alone is a regular expression over whole module names: write .*name)"
        raise ValueError(
            f"--lora_target_modules {' '.join(unmatched)} matches no module of {path!r}"
            f"{pattern if isinstance(targets, str) else ''}; its linear layers are {', '.join(linear)}, or give "
            "all-linear."
        )


def load_tokenizer(name_or_path: str, revision: str = "main") -> PreTrainedTokenizerBase:
    """The tokenizer at `name_or_path`, with a pad token set (to EOS, with a warning) when it has none."""
    _check_source(name_or_path, "--model_name_or_path")
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, revision=revision)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"The tokenizer of {name_or_path!r} has neither a pad nor an EOS token; add a pad token.")
        logger.warning(
            "The tokenizer of %s has no pad token; using its EOS token %r to pad.", name_or_path, tokenizer.eos_token
        )
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def check_same_tokenizer(model: str, other: str, option: str) -> None:
    """`other` (given by `option`) is compared with `model` example by example: both must tokenise text alike."""
    vocabulary, other_vocabulary = load_tokenizer(model).get_vocab(), load_tokenizer(other).get_vocab()
    if vocabulary != other_vocabulary:
        raise ValueError(
            f"{option} {other!r} has another tokenizer than {model!r} ({len(other_vocabulary)} against "
            f"{len(vocabulary)} tokens): its losses and probabilities would not compare with the model's. Give the "
            "model fine-tuned from the same base (e.g. both from `rlunlearn finetune`)."
        )


@contextlib.contextmanager
def whole_models(args: TrainingArguments):
    """Models loaded inside are whole on every process. Under DeepSpeed ZeRO-3, transformers partitions every model it
    loads over the processes, for the training engine to gather; a model used outside the engine (a reward classifier)
    must be loaded whole."""
    if not is_deepspeed_zero3_enabled():
        yield
        return
    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        args.deepspeed_plugin.set_deepspeed_weakref()


def quantization_device_map() -> dict | None:
    """bitsandbytes places quantised weights at load time: on this process's GPU, or (None) on the CPU."""
    if torch.cuda.is_available():
        from accelerate import PartialState

        return {"": PartialState().local_process_index}
    return None


def model_init_kwargs(model_args: ModelConfig, for_training: bool = True) -> dict:
    """`from_pretrained` keyword arguments for `model_args`, checked before anything loads."""
    quantized = model_args.load_in_4bit or model_args.load_in_8bit
    if quantized:
        if for_training and not model_args.use_peft:
            flag = "--load_in_4bit" if model_args.load_in_4bit else "--load_in_8bit"
            raise ValueError(f"{flag} needs --use_peft: quantised weights are frozen, so only LoRA adapters can train.")
        try:
            import bitsandbytes  # noqa: F401
        except Exception as error:
            raise ImportError(
                f"--load_in_4bit/--load_in_8bit need bitsandbytes, which cannot be loaded here ({error}). Install it "
                "(`pip install bitsandbytes`) or drop the quantisation flag."
            ) from error
    kwargs = {
        "revision": model_args.model_revision,
        "dtype": model_args.dtype if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype),
    }
    if model_args.attn_implementation is not None:
        kwargs["attn_implementation"] = model_args.attn_implementation
    if quantized:
        kwargs["quantization_config"] = get_quantization_config(model_args)
        kwargs["device_map"] = quantization_device_map()
    return kwargs


def load_model(model_args: ModelConfig, for_training: bool = True) -> PreTrainedModel:
    """The causal LM `model_args` describes: full precision, bf16, or quantised (LoRA is then added by the trainer).

    A folder holding a LoRA adapter (adapter_config.json) loads onto its base model with peft; for evaluation the
    adapter is merged into full-precision weights.
    """
    if not model_args.model_name_or_path:
        raise ValueError("--model_name_or_path is required: a local folder or a hub model id.")
    check_model_source(model_args.model_name_or_path)
    kwargs = model_init_kwargs(model_args, for_training=for_training)
    is_adapter = (Path(model_args.model_name_or_path).expanduser() / "adapter_config.json").is_file()
    try:
        if is_adapter:
            model = AutoPeftModelForCausalLM.from_pretrained(
                model_args.model_name_or_path, is_trainable=for_training, **kwargs
            )
            if not for_training and "quantization_config" not in kwargs:
                model = model.merge_and_unload()
        else:
            model = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, **kwargs)
    except (RuntimeError, ImportError, ValueError) as error:
        if "quantization_config" in kwargs:
            raise RuntimeError(
                f"Loading {model_args.model_name_or_path!r} in {'4' if model_args.load_in_4bit else '8'}-bit failed: "
                f"{error}. bitsandbytes must support this device; drop --load_in_4bit/--load_in_8bit to load in "
                "full precision."
            ) from error
        raise
    if for_training:
        keep_4bit_trainable_on_cpu(model)
    return model
