"""Evaluation: the TOFU and MUSE metrics, membership inference, and reports (JSON, table, trade-off plot).

`evaluate_model` runs every metric that needs only the evaluated model; `build_report` adds those measured against
the retain model (forget quality, privleak, the reference attack, Tug-of-War).
"""

from . import metrics
from .metrics import rouge_l
from .report import (
    RETAIN,
    TARGET,
    UNLEARNED,
    build_report,
    compare_with_retain,
    format_table,
    markdown_table,
    plot_tradeoff,
    retain_from_report,
    summary_rows,
    summary_table,
)
from .scoring import Generation, TokenScores, generate_answers, score_answers
from .suite import EvalSettings, evaluate_folder, evaluate_model, evaluate_split

__all__ = [
    "RETAIN",
    "TARGET",
    "UNLEARNED",
    "EvalSettings",
    "Generation",
    "TokenScores",
    "build_report",
    "compare_with_retain",
    "evaluate_folder",
    "evaluate_model",
    "evaluate_split",
    "format_table",
    "generate_answers",
    "markdown_table",
    "metrics",
    "plot_tradeoff",
    "retain_from_report",
    "rouge_l",
    "score_answers",
    "summary_rows",
    "summary_table",
]
