"""Reading a benchmark's published files: from a local folder in the published layout, or from the hub."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

# The formats a published file comes in, by suffix, and the `datasets` builder that reads each.
_READERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def is_hub_id(source: str | Path) -> bool:
    return bool(re.fullmatch(r"[\w.\-]+/[\w.\-]+", str(source))) and not Path(source).expanduser().exists()


def read_file(folder: Path, stem: str, option: str, columns: Sequence[str]) -> list[dict]:
    """Rows of the file `<folder>/<stem>.<jsonl|json|csv|parquet>`, which must have `columns`; a missing file or
    column is an error that names the file and `option`."""
    candidates = [folder / f"{stem}{suffix}" for suffix in _READERS]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise FileNotFoundError(
            f"{option} {str(folder)!r} has no {stem} file ({', '.join(p.name for p in candidates)}): point it at a "
            "folder in the published layout."
        )
    from datasets import Dataset

    reader = _READERS[path.suffix]
    table = {"json": Dataset.from_json, "csv": Dataset.from_csv, "parquet": Dataset.from_parquet}[reader](str(path))
    return check_columns(table.to_list(), columns, str(path))


def read_hub(dataset_id: str, config: str | None, split: str, option: str, columns: Sequence[str]) -> list[dict]:
    """Rows of a published dataset on the hub, which must have `columns`."""
    from datasets import load_dataset

    try:
        rows = load_dataset(dataset_id, config, split=split).to_list()
    except Exception as error:  # the hub raises many kinds of errors when offline
        raise ConnectionError(
            f"Could not load {dataset_id!r} ({config or 'default'}, {split}) from the hub ({error}). Without network, "
            f"point {option} at a local folder in the published layout."
        ) from error
    return check_columns(rows, columns, f"{dataset_id} ({config or 'default'}, {split})")


def check_columns(rows: list[dict], columns: Sequence[str], where: str) -> list[dict]:
    if not rows:
        raise ValueError(f"{where} holds no rows.")
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise ValueError(f"{where} lacks the column(s) {missing}; it has {sorted(rows[0])}.")
    return rows
