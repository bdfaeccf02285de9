"""Evaluation: the TOFU and MUSE metrics, membership inference, and reports (JSON, table, trade-off plot).

`evaluate_model` runs every metric that needs only the evaluated model; `run_probes` the robustness probes
(paraphrase, quantisation, relearning, extraction by sampling); `build_report` adds the values measured against the
retain model (forget quality, privleak, the reference attack, Tug-of-War) and the target (quantisation recovery).
"""

from ..arguments import PROBES, ProbeSettings, resolve_probes
from . import metrics
from .fluency import (
    FLUENCY_SPLITS,
    FluencyJudge,
    classifier_judge,
    judge_fluency,
    perplexity_judge,
    repetition,
    saved_model_perplexity_judge,
)
from .metrics import rouge_l
from .probes import recovered_fraction, run_probes
from .report import (
    PROBE_COLUMNS,
    RETAIN,
    SUMMARY_COLUMNS,
    TARGET,
    TASK_SUMMARY_COLUMNS,
    UNLEARNED,
    build_report,
    compare_with_retain,
    format_table,
    format_value,
    has_probes,
    markdown_table,
    plot_tradeoff,
    report_columns,
    report_task,
    retain_from_report,
    summary_rows,
    summary_table,
    utility_notes,
)
from .scoring import (
    EvalSettings,
    Generation,
    TokenScores,
    generate_answers,
    gradient_norms,
    sample_answers,
    score_answers,
)
from .suite import evaluate_folder, evaluate_model, evaluate_split
from .tasks import HarmJudge, judge_harm

__all__ = [
    "RETAIN",
    "TARGET",
    "UNLEARNED",
    "SUMMARY_COLUMNS",
    "TASK_SUMMARY_COLUMNS",
    "PROBES",
    "PROBE_COLUMNS",
    "EvalSettings",
    "FLUENCY_SPLITS",
    "FluencyJudge",
    "Generation",
    "HarmJudge",
    "ProbeSettings",
    "TokenScores",
    "build_report",
    "classifier_judge",
    "compare_with_retain",
    "evaluate_folder",
    "evaluate_model",
    "evaluate_split",
    "format_table",
    "format_value",
    "has_probes",
    "judge_fluency",
    "judge_harm",
    "generate_answers",
    "gradient_norms",
    "markdown_table",
    "metrics",
    "perplexity_judge",
    "plot_tradeoff",
    "recovered_fraction",
    "report_columns",
    "report_task",
    "repetition",
    "resolve_probes",
    "retain_from_report",
    "rouge_l",
    "run_probes",
    "sample_answers",
    "saved_model_perplexity_judge",
    "score_answers",
    "summary_rows",
    "summary_table",
    "utility_notes",
]
