"""The README's Python snippets run as printed (issue 17, item 8): the self-contained blocks
(those that start with ``import``); the sweep and GPU fragments need a spec file or a GPU."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), re.M | re.S)


def test_the_readme_has_its_snippets():
    assert len(BLOCKS) >= 3 and sum(b.startswith("import") for b in BLOCKS) >= 3


@pytest.mark.parametrize("code", [b for b in BLOCKS if b.startswith("import")],
                         ids=lambda b: b.splitlines()[-1][:40])
def test_readme_snippet_runs(code, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the deflation snippet writes run.npz
    exec(compile(code, str(README), "exec"), {"__name__": "readme"})
