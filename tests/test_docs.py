"""The manual: MkDocs builds docs/ with --strict, README.md links every page, and every shell block of README.md and
docs/ marked `<!-- runs offline -->` runs as written (on tiny settings)."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, tofu_folder

DOCS = REPO / "docs"
PAGES = sorted(path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md"))
MARKER = "<!-- runs offline -->"

# Appended to each marked command by subcommand (argparse keeps the last value of a repeated flag, so these override
# the command's own), so that the commands run in seconds: tiny models from scratch instead of the offline base
# (pretraining it takes minutes), two training steps, one retain author, short answers. A marked command whose
# subcommand is not here fails the test rather than run at full size.
TINY = {
    "demo": "--from_scratch --model_preset tiny --vocab_size 300 --num_authors 2 --num_forget_authors 1 "
    "--train_background false",
    "finetune": "--from_scratch --model_preset tiny --vocab_size 300 --max_steps 2 --num_forget_authors 1 "
    "--num_retain_authors 1 --max_new_tokens 8",
    "unlearn": "--max_steps 2 --num_forget_authors 1 --num_retain_authors 1 --evaluate false",
    "eval": "--num_forget_authors 1 --num_retain_authors 1 --max_new_tokens 8",
}


def test_docs_build_with_strict(tmp_path):
    # mkdocs.yml sets strict and turns every link and navigation problem into a warning: a page left out of `nav`, a
    # link to a missing page or anchor, an absolute link, a link outside docs/.
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "index.html").is_file()


def _nav_pages(nav: list) -> list[str]:
    pages = []
    for entry in nav:
        values = entry.values() if isinstance(entry, dict) else [entry]
        for value in values:
            pages += [value] if isinstance(value, str) else _nav_pages(value)
    return pages


def test_every_page_is_in_the_nav_and_linked_from_the_readme():
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    assert config["docs_dir"] == "docs" and config["strict"] is True
    assert sorted(_nav_pages(config["nav"])) == PAGES
    linked = set(re.findall(r"\]\(docs/([^)#\s]+)", (REPO / "README.md").read_text()))
    assert not set(PAGES) - linked, f"README.md links no {sorted(set(PAGES) - linked)}"


def _marked_blocks() -> tuple[dict[str, str], list[str]]:
    """The marked shell blocks of README.md and docs/ by where they first appear (a block repeated elsewhere runs
    once), and the files holding a marker that is not right before a ```bash block."""
    blocks, misplaced = {}, []
    for path in [REPO / "README.md", *sorted(DOCS.rglob("*.md"))]:
        text, name = path.read_text(), path.relative_to(REPO).as_posix()
        found = re.findall(rf"^{re.escape(MARKER)}\n```bash\n(.*?)^```", text, flags=re.S | re.M)
        if len(found) != text.count(MARKER):
            misplaced.append(name)
        for i, block in enumerate(found, 1):
            blocks.setdefault(block, f"{name}:{i}")
    return {where: block for block, where in blocks.items()}, misplaced


def _commands(block: str) -> list[str]:
    """The block's commands: backslash-continued lines joined, comments and blank lines left out."""
    lines = re.sub(r"\\\n\s*", " ", block).splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


BLOCKS, MISPLACED = _marked_blocks()


def test_offline_markers_mark_the_demo_and_the_tofu_example():
    assert not MISPLACED, f"a {MARKER} line is not right before a ```bash block in {MISPLACED}"
    commands = [command for block in BLOCKS.values() for command in _commands(block)]
    assert "rlunlearn demo" in commands
    assert [c.split()[1] for c in commands if "--data tofu" in c] == ["finetune", "unlearn", "eval"]


@pytest.mark.parametrize("where", sorted(BLOCKS))
def test_offline_block_runs_as_written(where, tmp_path):
    commands = _commands(BLOCKS[where])
    assert commands and all(c.startswith("rlunlearn ") for c in commands), f"{where}: only rlunlearn commands run"
    # The commands' relative paths resolve as in a checkout beside ../shared/data/tofu; the cache is the test's own.
    work = tmp_path / "work"
    work.mkdir()
    if any("--data tofu" in command for command in commands):
        tofu = tofu_folder()
        if tofu is None:
            pytest.skip("no local TOFU copy: set RLUNLEARN_TOFU_DIR or place it in ../shared/data/tofu")
        (tmp_path / "shared" / "data").mkdir(parents=True)
        (tmp_path / "shared" / "data" / "tofu").symlink_to(tofu, target_is_directory=True)
    env = {
        **os.environ,
        "RLUNLEARN_CACHE": str(tmp_path / "cache"),
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TQDM_DISABLE": "1",
    }
    rlunlearn = Path(sys.executable).with_name("rlunlearn")
    assert rlunlearn.is_file(), f"no rlunlearn script beside {sys.executable}: install the project (README)"
    for command in commands:
        words = shlex.split(command)[1:]
        subcommand = next(word for word in words if not word.startswith("-"))
        assert subcommand in TINY, f"{where}: no tiny settings for `rlunlearn {subcommand}` in TINY"
        result = subprocess.run(
            [str(rlunlearn), *words, *TINY[subcommand].split()],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, f"{where}: `{command}` failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
