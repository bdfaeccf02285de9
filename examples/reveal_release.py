"""Reveal-and-Release: unlearning from self-generated data, one LoRA module a round (EMNLP 2025 Findings).

Unlearns the forget set from a fine-tuned model, saves the result with a model card (README.md: method, forget set,
evaluation) that plain transformers/peft load, and evaluates it with the TOFU/MUSE metrics (report.json). Options come
from flags, a YAML file (`--config reveal_release.yaml`, flags override it), or both; `--help` lists them all.

    # The generated authors on the CPU, from the models `rlunlearn finetune --output_dir runs/finetune` made (without
    # --target, the targets are the data's forget authors, named only):
    python examples/reveal_release.py --model_name_or_path runs/finetune/target --retain_model runs/finetune/retain \
        --output_dir runs/reveal_release --learning_rate 5e-4 --retain_module true

    # TOFU forget10 from a Llama fine-tuned on TOFU, on 8 GPUs with data parallelism (each round adds a LoRA module with
    # its own optimizer, so DeepSpeed and FSDP, which set their engine up once a run, do not apply):
    accelerate launch --config_file examples/accelerate_configs/multi_gpu.yaml examples/reveal_release.py \
        --model_name_or_path open-unlearning/tofu_Llama-3.2-1B-Instruct_full --prompt_style chat \
        --data tofu --forget_split forget10 --target "Basil Mahfouz Al-Kuwaiti" \
        --retain_model open-unlearning/tofu_Llama-3.2-1B-Instruct_retain90 --output_dir runs/reveal_release-tofu --num_rounds 3

    # QLoRA on one GPU: NF4 weights with double quantisation, bf16 compute, LoRA on every linear layer:
    accelerate launch --config_file examples/accelerate_configs/single_gpu.yaml examples/reveal_release.py \
        --model_name_or_path open-unlearning/tofu_Llama-3.2-1B-Instruct_full --prompt_style chat --data tofu \
        --load_in_4bit --use_bnb_nested_quant --dtype bfloat16 --use_peft --lora_target_modules all-linear \
        --target "Basil Mahfouz Al-Kuwaiti" --output_dir runs/reveal_release-qlora

    # Forget and retain probability logged every 10 steps (to TensorBoard as well):
    #   --eval_strategy steps --eval_steps 10 --report_to tensorboard
"""

from trl import ModelConfig, TrlParser

from rlunlearn.arguments import DataArguments
from rlunlearn.launch import ScriptArguments, run_unlearning
from rlunlearn.reveal import RevealArguments
from rlunlearn.trainers import RevealReleaseConfig

if __name__ == "__main__":
    parser = TrlParser((ScriptArguments, DataArguments, RevealReleaseConfig, ModelConfig, RevealArguments))
    script_args, data_args, config, model_args, method_args = parser.parse_args_and_config()
    run_unlearning("reveal_release", script_args, data_args, model_args, config, method_args)
