"""The cache of what is trained once and reused: pretrained bases, fine-tuned target and retain models.

Each entry is a folder named by a hash of everything that changes what it holds. It is built in a staging folder beside
it (`<name>.partial`) and renamed once complete, so an interrupted run never leaves a half-made entry, and every entry
finished before an interruption stays. A builder that can resume (pretraining, from its checkpoints) picks up what an
interrupted run left in the staging folder; the others start it again, and remove it when interrupted. Runs in parallel
share the cache: an entry is built under a lock (`<name>.lock`), and a run that needs it while another builds it waits
and reuses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import psutil
from filelock import FileLock, Timeout

COMPLETE = "complete.json"


def default_cache_dir() -> str:
    return os.environ.get("RLUNLEARN_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "rlunlearn"))


def settings_hash(parts: dict) -> str:
    """A stable hash of JSON-able settings (key order does not matter)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def cached_build(folder: Path, key: dict, build: Callable[[Path], dict | None]) -> tuple[Path, bool]:
    """The entry `folder`, built now by `build(staging_folder)` unless it is complete already. `key` (what the entry
    was built from), the number of torch threads it was built on and what `build` returns are written to its
    complete.json. Returns the folder and whether it was reused."""
    if (folder / COMPLETE).is_file():
        return folder, True
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder.with_name(folder.name + ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"Waiting for another run that is building {folder}", flush=True)
        lock.acquire()
    try:
        if (folder / COMPLETE).is_file():  # built by the run this one waited for
            return folder, True
        staging = folder.with_name(folder.name + ".partial")
        info = build(staging) or {}
        import torch  # here, not at the top: the CLI reads the cache's location before it may load torch

        # Not part of the key: the same training on another number of threads sums in another order and ends with
        # weights slightly apart, so a rebuild elsewhere can differ; this says which count built the entry.
        record = {"key": key, "torch_threads": torch.get_num_threads(), **info}
        (staging / COMPLETE).write_text(json.dumps(record, indent=2, default=str))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(staging, folder)
        return folder, False
    finally:
        lock.release()


def write_whole(path: Path, text: str) -> None:
    """Write `path` aside and rename it into place, so that a run in parallel never reads half of it."""
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    partial.write_text(text)
    os.replace(partial, path)


def entry_key(folder: Path) -> dict:
    """What a complete entry was built from."""
    return json.loads((Path(folder) / COMPLETE).read_text())["key"]


def entry_threads(folder: Path) -> int | None:
    """The number of torch threads a complete entry was built on (None for entries built before it was recorded)."""
    return json.loads((Path(folder) / COMPLETE).read_text()).get("torch_threads")


def remove_abandoned_staging(parent: Path) -> list[Path]:
    """Delete the staging folders that earlier versions named `<name>.tmp-<pid>` in `parent` whose process is gone:
    what their killed runs left, which no run reads any more. Returns those deleted."""
    abandoned = []
    for staging in Path(parent).glob("*.tmp-*"):
        pid = staging.name.rsplit(".tmp-", 1)[1]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(staging, ignore_errors=True)
            abandoned.append(staging)
    return abandoned
