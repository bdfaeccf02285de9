"""README.md is the user's manual: its Python example must run as written."""

import re
import runpy

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
