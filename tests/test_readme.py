"""README.md is the user's manual: its Python example must run as written, and CI installs and tests as it says."""

import re
import runpy
import shlex

from conftest import REPO


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    assert blocks, "README.md has no Python example"
    script = tmp_path / "example.py"
    script.write_text(blocks[0])
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(script), run_name="__main__")
    before, after = capsys.readouterr().out.strip().splitlines()[-2:]
    assert before.startswith("before:") and after.startswith("after:")
    (forget_before, retain_before), (forget_after, retain_after) = (
        [float(v) for v in re.findall(r"'(?:forget|retain)': ([0-9.]+)", line)] for line in (before, after)
    )
    # The example unlearns one author: its answers are recalled worse than before and than the others'.
    assert forget_after < forget_before and forget_after < retain_after


def _commands(text: str, first_word: str) -> list[str]:
    """The commands of `text` (shell lines, `&&` chains split) that start with `first_word`, words normalised."""
    commands = [part.strip() for line in text.splitlines() for part in line.split("&&")]
    return [" ".join(shlex.split(c)) for c in commands if c.startswith(first_word)]


def test_ci_installs_and_tests_as_readme_says():
    readme = (REPO / "README.md").read_text()
    install = readme.split("## Install", 1)[1].split("\n## ", 1)[0]
    cpu_block = re.findall(r"```bash\n(.*?)```", install, flags=re.S)[0]
    ci = (REPO / ".ci" / "run").read_text()
    # The CI machine holds the CPU wheel locally: its torch line differs only in where the wheel comes from.
    readme_steps = [
        c.replace(" --index-url https://download.pytorch.org/whl/cpu", "") for c in _commands(cpu_block, "p")
    ]
    assert readme_steps == [c for c in _commands(ci, "p") if c.startswith(("python3", "pip"))]
    assert any("--index-url https://download.pytorch.org/whl/cpu" in c for c in _commands(cpu_block, "pip"))
    test_block = re.findall(r"```bash\n(.*?)```", readme.split("## Test", 1)[1], flags=re.S)[0]
    assert _commands(test_block, "pytest") == _commands(ci, "pytest") == ["pytest"]
