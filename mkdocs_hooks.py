r"""MkDocs hook (mkdocs.yml `hooks`): the pages are written for GitHub too, whose tables need a pipe inside a code span
escaped (`kl\|js`); Python-Markdown keeps code spans whole and would show the backslash, so it is dropped there."""

import re


def _unescape_pipes(line: str) -> str:
    if not line.startswith("|"):
        return line
    return re.sub(r"`[^`]*`", lambda span: span.group(0).replace("\\|", "|"), line)


def on_page_markdown(markdown: str, **kwargs) -> str:
    return "\n".join(_unescape_pipes(line) for line in markdown.split("\n"))
