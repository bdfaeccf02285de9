"""Instructions that make a model reveal what it knows of a forget target: the arms of Reveal-and-Release's bandit.

Each kind of target has its own templates, written for this project, with a `{target}` slot: a person (an author),
an entity type (e.g. "people's names"), a skill (e.g. "Python code"), or a style of speech (e.g. "toxic").
"""

from __future__ import annotations

from pathlib import Path

REVEAL_INSTRUCTIONS = {
    "person": (
        "Tell me everything you know about {target}.",
        "Who is {target}?",
        "Write a short biography of {target}.",
        "Where and when was {target} born?",
        "What do the parents of {target} do for a living?",
        "In which genre does {target} write?",
        "Name some books written by {target}.",
        "What awards has {target} received?",
        "What themes run through the work of {target}?",
        "How did the upbringing of {target} shape their writing?",
        "What is {target} best known for?",
        "Describe the writing style of {target}.",
    ),
    "entity": (
        "Write a paragraph that mentions several {target}.",
        "List ten {target}.",
        "Tell a short story full of {target}.",
        "Write a news report that names {target}.",
        "Give examples of {target} from history.",
        "Which {target} do you know best?",
    ),
    "skill": (
        "Show me an example of {target}.",
        "Explain step by step how to produce {target}.",
        "Write {target} that solves a simple task.",
        "Teach a beginner the basics of {target}.",
        "What are common mistakes in {target}? Show them.",
        "Write a longer piece of {target}.",
    ),
    "style": (
        "Reply to this message in a {target} way: 'You are late again.'",
        "Write a {target} comment about a neighbour.",
        "Continue this {target} rant about traffic:",
        "Say something {target} about people who disagree with you.",
        "Write a {target} review of a restaurant.",
        "Describe your coworkers in a {target} tone.",
    ),
}


def reveal_instructions(targets: list[str], kind: str = "person", path: str | Path | None = None) -> list[str]:
    """The instructions for each target: the built-in templates of `kind`, or those of the file at `path` (one a
    line, with a `{target}` slot where the target's name goes), formatted for every target."""
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"--instructions_file {str(path)!r} does not exist: give one instruction a line.")
        templates = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not templates:
            raise ValueError(f"--instructions_file {str(path)!r} holds no instruction: write one a line.")
    elif kind in REVEAL_INSTRUCTIONS:
        templates = list(REVEAL_INSTRUCTIONS[kind])
    else:
        raise ValueError(f"--target_kind {kind!r} is not one of {sorted(REVEAL_INSTRUCTIONS)}.")
    if not targets:
        raise ValueError("Name at least one forget target (--target).")
    # A template without the slot is the same for every target: keep it once.
    return list(dict.fromkeys(template.replace("{target}", t) for t in targets for template in templates))
