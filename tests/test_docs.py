"""The manual: MkDocs builds docs/ with --strict, and README.md links every page."""

import re
import subprocess
import sys

import yaml
from conftest import REPO

DOCS = REPO / "docs"
PAGES = sorted(path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md"))


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
