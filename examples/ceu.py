"""CE-U: cross-entropy unlearning, toward the model's own distribution without the forget token (Yang, 2025).

Unlearns the forget set from a fine-tuned model, saves the result with a model card (README.md: method, forget set,
evaluation) that plain transformers/peft load, and evaluates it with the TOFU/MUSE metrics (report.json). Options come
from flags, a YAML file (`--config ceu.yaml`, flags override it), or both; `--help` lists them all.

    # The generated authors on the CPU, from the models `rlunlearn finetune --output_dir runs/finetune` made:
    python examples/ceu.py --model_name_or_path runs/finetune/target --retain_model runs/finetune/retain \
        --output_dir runs/ceu --learning_rate 3e-4 --num_train_epochs 5

    # TOFU forget10 from a Llama fine-tuned on TOFU, on 8 GPUs with DeepSpeed ZeRO-3 (other engines:
    # examples/accelerate_configs/{single_gpu,multi_gpu,deepspeed_zero2,fsdp}.yaml):
    accelerate launch --config_file examples/accelerate_configs/deepspeed_zero3.yaml examples/ceu.py \
        --model_name_or_path open-unlearning/tofu_Llama-3.2-1B-Instruct_full --prompt_style chat \
        --data tofu --forget_split forget10 \
        --retain_model open-unlearning/tofu_Llama-3.2-1B-Instruct_retain90 --output_dir runs/ceu-tofu

    # QLoRA on one GPU: NF4 weights with double quantisation, bf16 compute, LoRA on every linear layer:
    accelerate launch --config_file examples/accelerate_configs/single_gpu.yaml examples/ceu.py \
        --model_name_or_path open-unlearning/tofu_Llama-3.2-1B-Instruct_full --prompt_style chat --data tofu \
        --load_in_4bit --use_bnb_nested_quant --dtype bfloat16 --use_peft --lora_target_modules all-linear \
        --output_dir runs/ceu-qlora

    # Forget and retain probability logged every 10 steps (to TensorBoard as well):
    #   --eval_strategy steps --eval_steps 10 --report_to tensorboard
"""

from trl import ModelConfig, TrlParser

from rlunlearn.arguments import DataArguments
from rlunlearn.launch import ScriptArguments, run_unlearning
from rlunlearn.trainers import CEUConfig

if __name__ == "__main__":
    parser = TrlParser((ScriptArguments, DataArguments, CEUConfig, ModelConfig))
    script_args, data_args, config, model_args = parser.parse_args_and_config()
    run_unlearning("ceu", script_args, data_args, model_args, config)
