import logging

import pytest
import torch
from peft import PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2TokenizerFast
from trl import ModelConfig, get_peft_config

from rlunlearn.models import MODEL_PRESETS, build_model, load_model, load_tokenizer
from rlunlearn.trainers.utils import tokenize_pair


@pytest.fixture
def saved_model(tmp_path, tiny_model, tokenizer):
    tiny_model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def test_built_models_save_and_load_with_plain_transformers(saved_model, tiny_model, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(saved_model)
    reloaded_tokenizer = AutoTokenizer.from_pretrained(saved_model)
    ids = reloaded_tokenizer("Question: Where was he born?\nAnswer:", return_tensors="pt").input_ids
    assert ids.tolist() == tokenizer("Question: Where was he born?\nAnswer:", return_tensors="pt").input_ids.tolist()
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, tiny_model(ids).logits)


@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
def test_presets_build_both_architectures(tokenizer, architecture):
    model = build_model(tokenizer, "tiny", architecture)
    assert model.config.model_type == architecture and model.config.vocab_size == len(tokenizer)
    assert model.config.hidden_size == MODEL_PRESETS["tiny"]["hidden_size"]
    with pytest.raises(ValueError, match="model_preset"):
        build_model(tokenizer, "huge")


def test_chat_template_prompt_is_a_prefix_of_the_conversation(tokenizer):
    prompt = [{"role": "user", "content": "Where was he born?"}]
    prompt_ids, completion_ids = tokenize_pair(tokenizer, prompt, [{"role": "assistant", "content": "In Tarsin."}])
    rendered = tokenizer.decode(prompt_ids + completion_ids)
    assert rendered.startswith("<|bos|><|user|>\nWhere was he born?<|eos|>\n<|assistant|>\n")
    assert tokenizer.decode(completion_ids).startswith("In Tarsin.<|eos|>")


def test_4bit_lora_loads_runs_and_trains_on_cpu(saved_model, tmp_path):
    args = ModelConfig(model_name_or_path=str(saved_model), load_in_4bit=True, use_peft=True, lora_r=4, lora_alpha=8)
    model = load_model(args)
    assert model.is_loaded_in_4bit
    assert type(model.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    model = get_peft_model(model, get_peft_config(args))
    lora = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert lora and all("lora_" in n for n in lora)

    ids = torch.randint(3, 100, (2, 12))
    # Evaluate first (eval mode, no gradient), as a run does before training: training must still get gradients.
    model.eval()
    with torch.no_grad(), model.disable_adapter():
        base_logits = model(input_ids=ids).logits
    model.train()
    loss = model(input_ids=ids, labels=ids).loss
    assert torch.isfinite(loss)
    loss.backward()
    torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0).step()
    # LoRA B starts at zero, so after one step only B has moved; the quantised base never does.
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, lora[n])]
    assert changed and all("lora_B" in n for n in changed)
    with torch.no_grad(), model.disable_adapter():
        torch.testing.assert_close(model(input_ids=ids).logits, base_logits)

    model.save_pretrained(tmp_path / "adapter")
    # The adapter loads back onto the full-precision base with plain peft, with the trained weights.
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(saved_model), tmp_path / "adapter")
    reloaded_params = dict(reloaded.named_parameters())
    for name in changed:
        torch.testing.assert_close(reloaded_params[name], model.get_parameter(name).float())


def test_bad_model_options_are_named_before_loading(saved_model, tmp_path):
    with pytest.raises(FileNotFoundError, match="--model_name_or_path"):
        load_model(ModelConfig(model_name_or_path=str(tmp_path / "missing")))
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE"):
        load_model(ModelConfig(model_name_or_path="someone/some-model"))
    with pytest.raises(ValueError, match="--use_peft"):
        load_model(ModelConfig(model_name_or_path=str(saved_model), load_in_4bit=True))
    with pytest.raises(ValueError, match="required"):
        load_model(ModelConfig())


def test_tokenizer_without_pad_token_gets_eos_and_a_warning(tmp_path, tokenizer, caplog):
    plain = GPT2TokenizerFast(tokenizer_object=tokenizer.backend_tokenizer, eos_token="<|eos|>")
    plain.save_pretrained(tmp_path / "tok")
    with caplog.at_level(logging.WARNING):
        loaded = load_tokenizer(str(tmp_path / "tok"))
    assert loaded.pad_token == "<|eos|>"
    assert "no pad token" in caplog.text
