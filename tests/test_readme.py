"""README's two commands stay true: CI runs exactly the test command README gives."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    quick_start = text.split("## Quick start", 1)[1]
    return re.findall(r"```bash\n(.+?)\n```", quick_start)[:2]


def test_readme_opens_with_two_commands_that_pin_torch() -> None:
    main_job, tests = readme_commands()
    assert "realnvp study moons" in main_job and "pytest" in tests
    assert "torch==2.13.0" in main_job and "torch==2.13.0" in tests


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in ci_lines
