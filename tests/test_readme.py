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


def library_section() -> str:
    return (ROOT / "README.md").read_text().split("## The library", 1)[1].split("\n## ", 1)[0]


def test_the_library_map_names_every_part_of_the_package() -> None:
    """Every entry of README's map exists, and every module or package of src/realnvp is in it."""
    tree = re.search(r"```\nsrc/realnvp/\n(.+?)```", library_section(), re.S).group(1)
    mapped = set(re.findall(r"^  (\S+?)/?\s", tree, re.M))
    src = ROOT / "src" / "realnvp"
    parts = {p.name.removesuffix(".py") for p in src.iterdir() if p.suffix == ".py" or p.is_dir()}
    parts -= {"__init__", "__main__", "__pycache__"}
    assert {m.removesuffix(".py") for m in mapped} == parts


def test_the_library_example_runs(tmp_path, monkeypatch) -> None:
    code = re.search(r"```python\n(.+?)```", library_section(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert (tmp_path / "runs" / "mine" / "model.json").exists()
    assert namespace["history"].step[-1] == 300


def test_the_conditional_example_runs() -> None:
    """README's conditional example runs as written, and its shapes are those it states."""
    section = (ROOT / "README.md").read_text().split("## Conditional flows", 1)[1]
    code = re.search(r"```python\n(.+?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["log_p"].shape == (5,)
    assert namespace["one"].shape == (1000, 2) and namespace["many"].shape == (100, 8, 2)
    assert namespace["z"].shape == (5, 2)
