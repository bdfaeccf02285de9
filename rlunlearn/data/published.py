"""Reading a benchmark's published files: from a local folder in the published layout, or from the hub."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

# The formats a published file comes in, by suffix, and the `datasets` builder that reads each.
_READERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def is_hub_id(source: str | Path) -> bool:
    return bool(re.fullmatch(r"[\w.\-]+/[\w.\-]+", str(source))) and not Path(source).expanduser().exists()


def local_folder(source: str, option: str, expected: str) -> Path:
    """The folder `source` names; an error says what `option` expects (a folder of `expected`, or a hub id)."""
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{option} {source!r} is neither a folder nor a hub id: give {expected}.")
    return folder


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


def read_hub(
    dataset_id: str, config: str | None, split: str | Sequence[str], option: str, columns: Sequence[str]
) -> list[dict]:
    """Rows of a published dataset on the hub, which must have `columns`; `split` may name alternatives (releases of
    a dataset that name a split apart), of which the first the dataset has is read."""
    from datasets import load_dataset

    names = [split] if isinstance(split, str) else list(split)
    where = f"{dataset_id} ({config or 'default'}, {' or '.join(names)})"
    try:
        if len(names) == 1:  # read alone: a configuration may hold large splits besides it
            splits = {names[0]: load_dataset(dataset_id, config, split=names[0])}
        else:
            splits = load_dataset(dataset_id, config)
    except Exception as error:  # the hub raises many kinds of errors when offline
        raise ConnectionError(
            f"Could not load {where} from the hub ({error}). Without network, point {option} at a local folder in "
            "the published layout."
        ) from error
    found = next((name for name in names if name in splits), None)
    if found is None:
        raise ValueError(
            f"{dataset_id} ({config or 'default'}) has no split {' or '.join(names)}; it has {list(splits)}."
        )
    return check_columns(splits[found].to_list(), columns, where)


def check_columns(rows: list[dict], columns: Sequence[str], where: str) -> list[dict]:
    if not rows:
        raise ValueError(f"{where} holds no rows.")
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise ValueError(f"{where} lacks the column(s) {missing}; it has {sorted(rows[0])}.")
    return rows
