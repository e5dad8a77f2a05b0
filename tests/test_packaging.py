"""What a published package needs: ``python -m build`` makes a wheel and an sdist that
``twine check`` accepts; the wheel installs into a clean virtual environment, where the package
imports with its version, its ``py.typed`` marker and its ``realnvp`` command."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import realnvp

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, cwd: Path = ROOT) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--outdir", str(out), str(ROOT))
    return out


def test_the_version_is_written_once() -> None:
    """``realnvp.__version__`` is the installed version, and the CHANGELOG has its release."""
    from packaging.version import Version

    assert realnvp.__version__ == importlib.metadata.version("realnvp")
    release = Version(realnvp.__version__).base_version
    assert f"\n## {release}" in (ROOT / "CHANGELOG.md").read_text()


def test_build_makes_a_wheel_and_an_sdist_that_twine_accepts(dist: Path) -> None:
    wheels, sdists = list(dist.glob("*.whl")), list(dist.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1
    assert f"realnvp-{realnvp.__version__}" in wheels[0].name
    out = run(sys.executable, "-m", "twine", "check", "--strict", *map(str, wheels + sdists))
    assert out.count("PASSED") == 2
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert "realnvp/py.typed" in names and "realnvp/cli/__init__.py" in names
    assert not any(n.startswith(("tests/", "benchmarks/", "examples/")) for n in names)


def test_the_wheel_installs_and_imports_in_a_clean_venv(dist: Path, tmp_path: Path) -> None:
    """A new venv gets the wheel alone (no dependencies: they would be the several hundred MB
    of torch again); its dependencies come from this environment's site-packages, put after
    its own on the path, so ``realnvp`` itself can only come from the wheel."""
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", str(venv))
    python = venv / "bin" / "python"
    wheel = next(dist.glob("*.whl"))
    run(sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", str(wheel))
    where = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = Path(run(str(python), "-c", where).strip())
    (site / "zz_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    code = (
        "import realnvp, pathlib, torch; from realnvp import RealNVP\n"
        "print(realnvp.__version__, pathlib.Path(realnvp.__file__).parent)\n"
        "f = RealNVP(features=2, num_layers=2); print(tuple(f.log_prob(torch.randn(3, 2)).shape))"
    )
    version, where, shape = run(str(python), "-c", code).split()
    assert version == realnvp.__version__ and Path(where).is_relative_to(venv) and shape == "(3,)"
    assert (Path(where) / "py.typed").exists()
    assert realnvp.__version__ in run(str(venv / "bin" / "realnvp"), "--version")
