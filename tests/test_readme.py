"""README.md is a user guide: short, with the two commands CI runs and library snippets that run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SNIPPETS = re.findall(r"```python\n(.*?)```", README, re.S)


def test_readme_is_short_and_ci_runs_its_test_command() -> None:
    assert len(README) <= 12_000
    commands = re.findall(r"^python3 -m venv .*$", README, re.M)
    assert len(commands) == 2 and "flwr run simulations/visualmixer_cifar" in commands[0]
    test_command = commands[1].split(" && ", 1)[1]
    assert test_command in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[f"snippet{i}" for i in range(len(SNIPPETS))])
def test_every_library_snippet_runs(snippet: str) -> None:
    done = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr[-3000:]


def test_every_relative_link_points_to_a_file() -> None:
    documents = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "experiments").glob("*/README.md")]
    for document in documents:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", document.read_text()):
            assert (document.parent / target).exists(), f"{document.relative_to(ROOT)} links to missing {target}"
