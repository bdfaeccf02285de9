"""Run under `accelerate launch` by tests/test_distributed.py: build an NPO trainer on every process and write, from the
main process, the retain examples each process draws at its first steps (argv: model folder, output JSON)."""

import json
import sys

from accelerate.utils import gather_object
from trl import ModelConfig

from rlunlearn.data import generate_authors, sft_dataset
from rlunlearn.models import load_model, load_tokenizer
from rlunlearn.trainers import NPOConfig, NPOTrainer

model_path, output = sys.argv[1], sys.argv[2]
bundle = generate_authors(num_authors=4, num_forget=1, seed=0)
config = NPOConfig(output_dir="unused", report_to="none", per_device_train_batch_size=2, retain_batch_size=4)
trainer = NPOTrainer(
    model=load_model(ModelConfig(model_name_or_path=model_path)),
    args=config,
    train_dataset=sft_dataset(bundle.forget),
    retain_dataset=sft_dataset(bundle.retain),
    processing_class=load_tokenizer(model_path),
)
draws = [trainer.retain_sampler.indices(step, 0) for step in range(3)]
gathered = gather_object([draws])
if trainer.accelerator.is_main_process:
    json.dump({"num_processes": trainer.accelerator.num_processes, "draws": gathered}, open(output, "w"))
trainer.accelerator.wait_for_everyone()
trainer.accelerator.end_training()  # a process that exits with the process group alive aborts
