"""Evaluation: the TOFU and MUSE metrics, membership inference, and reports (JSON, table, trade-off plot).

`evaluate_model` runs every metric that needs only the evaluated model; `run_probes` the robustness probes
(paraphrase, quantisation, relearning, extraction by sampling); `build_report` adds the values measured against the
retain model (forget quality, privleak, the reference attack, Tug-of-War) and the target (quantisation recovery).
"""

from ..arguments import PROBES, ProbeSettings, resolve_probes
from . import metrics
from .metrics import rouge_l
from .probes import recovered_fraction, run_probes
from .report import (
    PROBE_COLUMNS,
    RETAIN,
    TARGET,
    UNLEARNED,
    build_report,
    compare_with_retain,
    format_table,
    format_value,
    has_probes,
    markdown_table,
    plot_tradeoff,
    retain_from_report,
    summary_rows,
    summary_table,
    utility_notes,
)
from .scoring import EvalSettings, Generation, TokenScores, generate_answers, sample_answers, score_answers
from .suite import evaluate_folder, evaluate_model, evaluate_split

__all__ = [
    "RETAIN",
    "TARGET",
    "UNLEARNED",
    "PROBES",
    "PROBE_COLUMNS",
    "EvalSettings",
    "Generation",
    "ProbeSettings",
    "TokenScores",
    "build_report",
    "compare_with_retain",
    "evaluate_folder",
    "evaluate_model",
    "evaluate_split",
    "format_table",
    "format_value",
    "has_probes",
    "generate_answers",
    "markdown_table",
    "metrics",
    "plot_tradeoff",
    "recovered_fraction",
    "resolve_probes",
    "retain_from_report",
    "rouge_l",
    "run_probes",
    "sample_answers",
    "score_answers",
    "summary_rows",
    "summary_table",
    "utility_notes",
]
