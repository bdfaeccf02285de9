"""Comparing evaluated models with the retain model, and reporting: JSON, a console table, a trade-off plot."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from . import metrics
from .probes import QUANTIZATIONS, recovered_fraction
from .tasks import output_similarity

# Roles a model plays in a report: the model before unlearning, the gold standard, and unlearned ones.
TARGET, RETAIN, UNLEARNED = "target", "retain", "unlearned"

SUMMARY_COLUMNS = {
    "forget quality": "forget_quality",
    "model utility": "model_utility",
    "forget ROUGE-L": "forget_rougeL_recall",
    "forget prob": "forget_probability",
    "forget truth ratio": "forget_truth_ratio",
    "retain ROUGE-L": "retain_rougeL_recall",
    "extraction strength": "forget_extraction_strength",
    "privleak": "privleak",
    "tug-of-war": "tug_of_war",
}

# Each task's table: its forget measure first, then what it must keep.
TASK_SUMMARY_COLUMNS = {
    "entities": SUMMARY_COLUMNS,
    "harmful": {
        "harmful rate": "harmful_rate",
        "greedy": "harmful_rate_greedy",
        "forget prompts": "harmful_rate_forget_prompts",
        "rephrased": "harmful_rate_rephrased_prompts",
        "held-out recipes": "harmful_rate_held_out_prompts",
        "normal ROUGE-L": "normal_rougeL_recall",
        "normal similarity": "normal_output_similarity",
        "harmful answers' perplexity": "harmful_generation_perplexity",
    },
    "wmdp": {
        "hazard accuracy": "hazard_accuracy",
        "general accuracy": "general_accuracy",
        "chance": "hazard_chance",
    },
    "muse": {
        "VerbMem": "verbmem_rougeL_f1",
        "KnowMem forget": "knowmem_forget_rougeL_f1",
        "KnowMem retain": "knowmem_retain_rougeL_f1",
        "Min-K% AUC": "mia_auc_min_k",
        "privleak": "privleak",
    },
}

# The robustness probes' summary values (see probes.py), shown when a report has them.
PROBE_COLUMNS = {
    "forget ROUGE-L": "forget_rougeL_recall",
    "paraphrased ROUGE-L": "probe_paraphrase_forget_rougeL_recall",
    "4-bit ROUGE-L": "probe_nf4_forget_rougeL_recall",
    "4-bit recovered": "probe_nf4_recovered",
    "8-bit ROUGE-L": "probe_int8_forget_rougeL_recall",
    "8-bit recovered": "probe_int8_recovered",
    "relearned ROUGE-L": "probe_relearned_forget_rougeL_recall",
    "extraction rate": "probe_extraction_rate",
}


def has_probes(report: dict) -> bool:
    return any(key.startswith("probe_") for model in report["models"].values() for key in model["summary"])


def per_example(result: dict, split: str, key: str) -> np.ndarray:
    return np.asarray(result["splits"][split]["per_example"][key], dtype=float)


def compare_with_retain(result: dict, retain: dict) -> dict:
    """The metrics of `result` that are defined against the retain model's evaluation `retain` (a result of
    `evaluate_model`, computed now or read from a saved report): forget quality, privleak (from the Min-K% AUC, MUSE's
    choice, and for every attack), the reference attack's AUC, and Tug-of-War."""
    compared = {}
    splits, retain_splits = result["splits"], retain["splits"]
    if "truth_ratio" in splits.get("forget", {}).get("per_example", {}) and "forget" in retain_splits:
        compared["forget_quality"], compared["forget_quality_ks"] = metrics.forget_quality_test(
            per_example(result, "forget", "truth_ratio"), per_example(retain, "forget", "truth_ratio")
        )
    summary, retain_summary = result["summary"], retain["summary"]
    for attack in metrics.MIA_ATTACKS:
        key = f"mia_auc_{attack}"
        if key in summary and key in retain_summary:
            compared[f"privleak_{attack}"] = metrics.privleak(summary[key], retain_summary[key])
    if "privleak_min_k" in compared:
        compared["privleak"] = compared["privleak_min_k"]
    if all(s in splits and s in retain_splits for s in ("forget", "holdout")):
        # The reference attack scores a model's loss against the retain model's, example by example.
        reference = {
            s: metrics.mia_reference(-per_example(result, s, "avg_loss"), -per_example(retain, s, "avg_loss"))
            for s in ("forget", "holdout")
        }
        compared["mia_auc_reference"] = metrics.mia_auc(reference["forget"], reference["holdout"])
    tug_splits = ("forget", "retain", "holdout")
    if all(s in splits and s in retain_splits for s in tug_splits):
        compared["tug_of_war"] = metrics.tug_of_war(
            {s: splits[s]["metrics"]["rougeL_recall"] for s in tug_splits},
            {s: retain_splits[s]["metrics"]["rougeL_recall"] for s in tug_splits},
        )
    return compared


def compare_with_target(result: dict, target: dict) -> dict:
    """The quantisation probe's recovered fraction for each quantisation: how much of the forget ROUGE-L recall lost
    between the target and `result` the quantised `result` gets back; on harmful answers, the normal answers'
    similarity to the target's (`tasks.output_similarity`)."""
    summary, compared = result["summary"], {}
    similarity = output_similarity(result, target)
    if similarity is not None:
        compared["normal_output_similarity"] = similarity
    for name in QUANTIZATIONS:
        key = f"probe_{name}_forget_rougeL_recall"
        if key in summary and "forget_rougeL_recall" in summary and "forget_rougeL_recall" in target["summary"]:
            compared[f"probe_{name}_recovered"] = recovered_fraction(
                summary["forget_rougeL_recall"], summary[key], target["summary"]["forget_rougeL_recall"]
            )
    return compared


def build_report(results: Mapping[str, dict], roles: Mapping[str, str], retain: dict | None, info: dict) -> dict:
    """One JSON-ready report of several models: each model's evaluation, its role, and its comparison with the
    retain model (`retain`, None when no retain model was given) and with the target model (when one is in
    `results`)."""
    target = next((results[name] for name, role in roles.items() if role == TARGET and name in results), None)
    models = {}
    for name, result in results.items():
        summary = dict(result["summary"])
        if retain is not None:
            summary.update(compare_with_retain(result, retain))
        if target is not None:
            summary.update(compare_with_target(result, target))
        models[name] = {**result, "role": roles.get(name, UNLEARNED), "summary": summary}
    return {**info, "models": models}


def retain_from_report(path: str | Path) -> dict:
    """The retain model's evaluation from a report written by `rlunlearn eval` (the model whose role is retain)."""
    report = json.loads(Path(path).read_text())
    found = [m for m in report.get("models", {}).values() if m.get("role") == RETAIN]
    if len(found) != 1:
        raise ValueError(
            f"--retain_report {str(path)!r} must hold exactly one model with role 'retain'; it holds {len(found)}."
        )
    return found[0]


# How a column's figures print, by the unit its label ends with (privleak is a percentage); figures of the other columns
# (metrics, ratios) print with 3 decimals, or in scientific notation below 0.001.
UNIT_FORMATS = {
    "tokens/s": "{:.0f}",
    "(s)": "{:.1f}",
    "s / step": "{:.2f}",
    "(MB)": "{:.0f}",
    "(M)": "{:.3g}",
    "privleak": "{:.1f}",
}


def format_value(value, column: str = "") -> str:
    """`value` as a table shows it in `column` (by the column's unit); missing values as '-'."""
    if value is None:
        return "-"
    if not isinstance(value, float | int) or isinstance(value, bool):
        return str(value)
    unit_format = next((f for unit, f in UNIT_FORMATS.items() if column.endswith(unit)), None)
    if unit_format is not None:
        return unit_format.format(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.2e}" if value != 0 and abs(value) < 1e-3 else f"{value:.3f}"


def utility_notes(report: dict) -> list[str]:
    """Lines that explain the model-utility column: the parts that make a model's utility 0 (a harmonic mean is 0 when
    one part is), and the parts it leaves out because the data lacks them; models with the same parts share a line."""
    notes = []
    for key, says in (
        ("model_utility_zero", "is 0 because of its part(s) at 0"),
        ("model_utility_missing", "leaves out what the data lacks"),
    ):
        models_by_parts: dict[tuple, list[str]] = {}
        for name, model in report["models"].items():
            if model["summary"].get(key):
                models_by_parts.setdefault(tuple(model["summary"][key]), []).append(name)
        notes += [
            f"Model utility of {', '.join(names)} {says}: {', '.join(parts)}."
            for parts, names in models_by_parts.items()
        ]
    return notes


def format_table(rows: list[dict], columns: list[str]) -> str:
    """A plain fixed-width table of `rows` (dicts) in `columns`, each figure formatted for its column's unit."""
    cells = [[format_value(row.get(c), c) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths))) for r in cells]
    return "\n".join(lines)


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """The same table in Markdown."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(format_value(row.get(c), c) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def summary_rows(report: dict, columns: Mapping[str, str] = SUMMARY_COLUMNS) -> list[dict]:
    """One row a model of the report: its name and the summary values of `columns` (label -> summary key)."""
    return [
        {"model": name, **{label: model["summary"].get(key) for label, key in columns.items()}}
        for name, model in report["models"].items()
    ]


def report_columns(report: dict) -> Mapping[str, str]:
    """The summary table's columns for the report's task (entities' when the report names none)."""
    return TASK_SUMMARY_COLUMNS[report_task(report)]


def report_task(report: dict) -> str:
    """The task of the report's data (entities where the report records no bundle summary)."""
    bundle = report.get("bundle")
    return bundle.get("task", "entities") if isinstance(bundle, dict) else "entities"


def summary_table(report: dict, columns: Mapping[str, str] | None = None) -> str:
    columns = columns or report_columns(report)
    return format_table(summary_rows(report, columns), ["model", *columns])


def plot_tradeoff(report: dict, path: str | Path, title: str | None = None) -> Path:
    """Forget quality (log scale) against model utility, one point per model; target and retain marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {TARGET: ("s", "tab:red"), RETAIN: ("*", "tab:green"), UNLEARNED: ("o", "tab:blue")}
    figure, axes = plt.subplots(figsize=(6.4, 4.8))
    for name, model in report["models"].items():
        utility, quality = model["summary"].get("model_utility"), model["summary"].get("forget_quality")
        if utility is None or quality is None:
            continue
        marker, color = styles[model["role"]]
        quality = max(quality, 1e-30)  # a p-value of exactly 0 has no place on a log axis
        axes.scatter(
            utility,
            quality,
            marker=marker,
            color=color,
            s=160 if marker == "*" else 70,
            zorder=3,
            label=f"{name} ({model['role']})",
        )
        axes.annotate(name, (utility, quality), textcoords="offset points", xytext=(6, 6), fontsize=9)
    axes.set_yscale("log")
    axes.set_xlabel("Model utility (harmonic mean of 9 TOFU values)")
    axes.set_ylabel("Forget quality (KS-test p-value, log)")
    axes.axhline(0.05, color="grey", linestyle=":", linewidth=1)
    axes.grid(True, which="major", alpha=0.3)
    axes.set_title(title or "Forget quality vs model utility")
    if axes.collections:
        axes.legend(fontsize=8, loc="lower left")
        low = min(math.log10(max(m["summary"].get("forget_quality") or 1, 1e-30)) for m in report["models"].values())
        axes.set_ylim(10 ** (math.floor(low) - 1), 2)
    path = Path(path)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
