"""The README's example runs as written, prints what it receives and exits by itself; its code is
examples/hello.py, so the two cannot drift apart."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _blocks(lang: str) -> list[str]:
    """The ``lang`` fenced code blocks of README.md's "Using it" section, in order."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Using it"):]
    section = section[:section.index("\n## ", 1)]
    return re.findall(rf"```{lang}\n(.*?)```", section, re.S)


def test_readme_example_runs_prints_and_exits() -> None:
    code = _blocks("python")[0]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)   # the timeout only turns a hang (a script that never ends) into a failure
    assert out.returncode == 0, out.stderr
    assert out.stdout == _blocks("text")[0], out.stdout + out.stderr


def test_readme_example_is_examples_hello() -> None:
    code = _blocks("python")[0]
    hello = (ROOT / "examples" / "hello.py").read_text()
    assert hello.endswith(code), "README.md's example and examples/hello.py differ"
