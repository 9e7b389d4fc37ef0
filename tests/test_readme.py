"""The README's scripting example runs as documented."""

import re
from pathlib import Path


def test_readme_python_example_runs(capsys):
    """The python block of README.md boots a machine and shows an overlay fault."""
    text = (Path(__file__).parent.parent / "README.md").read_text()
    block = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    exec(compile(block, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "overlay (ESR 0x000000409600004f)" in out
