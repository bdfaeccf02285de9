"""Refusal templates: the answers an unlearned model may give instead of the forgotten one."""

from __future__ import annotations

import json
from pathlib import Path

# Written for this project; FLAT and IdkDPO draw their template answers from these unless the user gives their own.
REFUSALS = (
    "I don't know.",
    "I'm not sure about that.",
    "I have no information about that.",
    "I can't answer that question.",
    "That is not something I know.",
    "I don't have any details on that.",
    "I'm afraid I can't help with that one.",
    "I have no knowledge of that.",
    "I cannot recall anything about that.",
    "That is outside what I know.",
    "I'm unable to answer that.",
    "Sorry, I don't have that information.",
    "I don't know the answer to that question.",
    "I have nothing reliable to say about that.",
    "I'm not aware of any details about that.",
    "I can't provide an answer to that.",
    "No information on that is available to me.",
    "I would only be guessing, so I won't answer.",
    "I don't have an answer for that.",
    "That isn't something I can tell you.",
)


# What a model that keeps a harmful recipe back says instead (the harmful task's templates).
HARMFUL_REFUSALS = (
    "I can't help with that.",
    "I won't give instructions for that; it could hurt people.",
    "Sorry, I can't provide that.",
    "That could cause serious harm, so I won't explain it.",
    "I'm not able to help make anything dangerous.",
    "I can't assist with that request.",
    "I won't share a recipe for something harmful.",
    "I'd rather not help with something that could injure someone.",
)
# On text corpora (WMDP's, MUSE's), a passage that gives nothing away, which preference methods prefer to a forget
# passage.
TEXT_TEMPLATES = (
    "This passage has been removed.",
    "The rest of this text is not available.",
    "Nothing further is recorded here.",
    "This section is intentionally left blank.",
)
# Each task's templates.
TASK_REFUSALS = {"entities": REFUSALS, "harmful": HARMFUL_REFUSALS, "wmdp": TEXT_TEMPLATES, "muse": TEXT_TEMPLATES}


def load_refusals(path: str | Path) -> list[str]:
    """Refusal answers from a file: one per line, as plain text or as JSON strings or objects with a `text` field.

    TOFU's idontknow.jsonl (plain text lines, the last without a newline) is one such file.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"--refusals_file {str(path)!r} does not exist: give a file with one refusal a line.")
    refusals = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if line[0] in '{"':
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                value = line
            if isinstance(value, dict):
                if "text" not in value:
                    raise ValueError(f"{path}:{number}: a JSON object line needs a `text` field, got {sorted(value)}.")
                value = value["text"]
            line = str(value).strip()
        refusals.append(line)
    if not refusals:
        raise ValueError(f"--refusals_file {str(path)!r} holds no refusal: write one answer a line.")
    return refusals
