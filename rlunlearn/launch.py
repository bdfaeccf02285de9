"""One method end to end, as the example scripts (`accelerate launch examples/<method>.py`) and `rlunlearn unlearn`
run it: unlearn, save a model that plain transformers/peft load, evaluate it, and write a model card beside it."""

from __future__ import annotations

import dataclasses
import inspect
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from accelerate import PartialState
from huggingface_hub import ModelCard, ModelCardData
from trl import ModelConfig

from rlunlearn.trainers import METHODS, UnlearningConfig

from .arguments import AnswerEvalArguments, DataArguments
from .data import UnlearningBundle
from .evaluation import (
    RETAIN,
    SUMMARY_COLUMNS,
    TARGET,
    UNLEARNED,
    EvalSettings,
    build_report,
    evaluate_folder,
    evaluate_model,
    markdown_table,
    report_columns,
    summary_rows,
)
from .models import check_model_source, check_same_tokenizer, whole_models
from .pipeline import report_info, unlearn


@dataclass
class ScriptArguments(AnswerEvalArguments):
    """What a run does after unlearning."""

    evaluate: bool = field(
        default=True,
        metadata={"help": "Evaluate the unlearned model (TOFU/MUSE metrics) and put the figures in its card."},
    )
    retain_model: str | None = field(
        default=None,
        metadata={"help": "The retain model (never saw the forget set): forget quality and privleak compare with it."},
    )


def check_script(script_args: ScriptArguments, model_args: ModelConfig) -> None:
    """The script's own checks, before anything loads: a model to unlearn, and a retain model that tokenises as it."""
    if not model_args.model_name_or_path:
        raise ValueError(
            "--model_name_or_path is required: the fine-tuned target model to unlearn from (e.g. "
            "runs/finetune-.../target from `rlunlearn finetune`)."
        )
    check_model_source(model_args.model_name_or_path)
    if script_args.retain_model:
        check_model_source(script_args.retain_model, "--retain_model")
        check_same_tokenizer(model_args.model_name_or_path, script_args.retain_model, "--retain_model")


def run_unlearning(
    method: str,
    script_args: ScriptArguments,
    data_args: DataArguments,
    model_args: ModelConfig,
    config: UnlearningConfig,
    method_args=None,
):
    """Unlearn the data's forget set from `--model_name_or_path` with `method` into `config.output_dir`; then, on the
    main process, evaluate the unlearned model (with the retain model, if given) into report.json and write README.md,
    its model card. Returns the trainer and the report (None where not evaluated, and on the other processes)."""
    check_script(script_args, model_args)
    bundle = data_args.bundle()
    trainer = unlearn(method, config, model_args.model_name_or_path, bundle, data_args, model_args, method_args)
    output_dir = Path(config.output_dir)
    report = None
    if PartialState().is_main_process:
        (output_dir / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=2))
        if script_args.evaluate:
            # The main process alone loads the models it evaluates: whole, also under ZeRO-3.
            with whole_models(config):
                report = _evaluate(
                    trainer, method, script_args, bundle, data_args, model_args.model_name_or_path, output_dir
                )
            (output_dir / "report.json").write_text(json.dumps(report, indent=2, default=str))
        write_model_card(output_dir, method, config, bundle, model_args.model_name_or_path, report)
    # The other processes wait for the evaluation (an evaluation longer than --ddp_timeout, 30 minutes, needs a larger
    # one), then every process ends the process group: one that exits with the group alive aborts.
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()
    return trainer, report


def _evaluate(trainer, method, script_args, bundle, data_args, model_path: str, output_dir: Path) -> dict:
    settings = EvalSettings(script_args.max_new_tokens, script_args.eval_batch_size)
    fmt = data_args.prompt_format()
    judge = {"harm_judge": data_args.harm_judge_function()}
    if trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled:
        # The weights are sharded over the processes: evaluate what was saved.
        results = {
            method: evaluate_folder(output_dir, bundle, fmt, settings, description=f"evaluating {method}", **judge)
        }
    else:
        model = trainer.accelerator.unwrap_model(trainer.model)
        results = {
            method: evaluate_model(
                model,
                trainer.processing_class,
                bundle,
                fmt,
                settings=settings,
                description=f"evaluating {method}",
                **judge,
            )
        }
    roles = {method: UNLEARNED}
    if bundle.task == "harmful":
        # LLMU measures the normal answers against the model before unlearning: it is evaluated too.
        results[TARGET] = evaluate_folder(model_path, bundle, fmt, settings, description="evaluating target", **judge)
        roles[TARGET] = TARGET
    if script_args.retain_model:
        retain = evaluate_folder(
            script_args.retain_model, bundle, fmt, settings, description="evaluating retain", **judge
        )
        results[RETAIN], roles[RETAIN] = retain, RETAIN
    return build_report(results, roles, results.get(RETAIN), report_info(bundle, data_args, settings))


def _method_settings(config: UnlearningConfig) -> dict:
    """The training settings every run records, and the fields the method's config adds to its TRL base config."""
    base = next(c for c in type(config).__mro__ if not c.__module__.startswith("rlunlearn.trainers"))
    own = {f.name for f in dataclasses.fields(type(config))} - {f.name for f in dataclasses.fields(base)}
    common = ["learning_rate", "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps", "seed"]
    settings = {name: getattr(config, name) for name in common + sorted(own - set(common))}
    settings = {name: value for name, value in settings.items() if value is not None}
    settings["processes"] = config.world_size
    return settings


def write_model_card(
    folder: Path, method: str, config: UnlearningConfig, bundle: UnlearningBundle, base_model: str, report: dict | None
) -> Path:
    """README.md in `folder`: the method and its paper, the forget set, the settings and the evaluation."""
    trainer_class = METHODS[method][1]
    # The method's module docstring (its paper and loss), or its trainer's when the module has none.
    method_doc = inspect.getdoc(sys.modules[trainer_class.__module__]) or inspect.getdoc(trainer_class)
    is_adapter = (folder / "adapter_config.json").is_file()
    data = ModelCardData(
        library_name="peft" if is_adapter else "transformers",
        base_model=None if Path(base_model).expanduser().exists() else base_model,
        tags=["rlunlearn", "unlearning", method],
    )
    summary = bundle.summary()
    load = (
        f"from peft import AutoPeftModelForCausalLM\n\nmodel = AutoPeftModelForCausalLM.from_pretrained({str(folder)!r})"
        if is_adapter
        else f"from transformers import AutoModelForCausalLM\n\nmodel = AutoModelForCausalLM.from_pretrained({str(folder)!r})"
    )
    settings = "\n".join(f"| {name} | {value} |" for name, value in _method_settings(config).items())
    lines = [
        "---",
        data.to_yaml(),
        "---",
        "",
        f"# {folder.name}: `{base_model}` after unlearning with {trainer_class._name}",
        "",
        "Unlearned with rlunlearn.",
        "",
        "## Method",
        "",
        method_doc,
        "",
        "## Forget set",
        "",
        f"Data `{summary['name']}`: {summary['forget']} forget examples of "
        f"{', '.join(summary['forget_authors'])}; {summary['retain']} retain examples of "
        f"{summary['num_retain_authors']} other authors.",
        "",
        "## Settings",
        "",
        "| setting | value |",
        "|---|---|",
        settings,
        "",
        "## Evaluation",
        "",
    ]
    if report is None:
        lines.append("Not evaluated (`--evaluate false`).")
    else:
        if summary.get("task", "entities") == "entities":
            columns = {
                label: SUMMARY_COLUMNS[label]
                for label in (
                    "forget quality",
                    "model utility",
                    "forget ROUGE-L",
                    "forget prob",
                    "privleak",
                    "tug-of-war",
                )
            }
            lines.append(
                "TOFU/MUSE metrics of `rlunlearn.evaluation` (forget quality, privleak and Tug-of-War need the retain "
                "model). Every figure and the per-example values are in report.json."
            )
        else:
            columns = report_columns(report)
            lines.append(
                f"The {summary['task']} task's metrics. Every figure and the per-example values are in report.json."
            )
        lines += ["", markdown_table(summary_rows(report, columns), ["model", *columns])]
    lines += ["## Use", "", "```python", load, "```", ""]
    ModelCard("\n".join(lines)).save(folder / "README.md")
    return folder / "README.md"
