"""README.md stays true: every config key, flag and command it must document is there."""

from __future__ import annotations

import subprocess
from pathlib import Path

import click
import pytest

from offrl.algos.configs import DQNConfig, PGConfig
from offrl.cli import main
from offrl.config import field_meta

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("cls", [PGConfig, DQNConfig])
def test_every_config_key_is_documented(cls: type) -> None:
    missing = [k for k in field_meta(cls) if f"`{'lambda' if k == 'lambda_' else k}`" not in README]
    assert missing == []


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    out = []
    for name, cmd in group.commands.items():
        out.append((f"{prefix}{name}", cmd))
        if isinstance(cmd, click.Group):
            out += _commands(cmd, f"{prefix}{name} ")
    return out


def test_every_command_is_documented() -> None:
    for name, _ in _commands(main):
        assert f"offrl {name}" in README, name


def test_every_train_flag_is_documented() -> None:
    flags = [o for p in main.commands["train"].params for o in p.opts if o.startswith("--")]
    missing = [f for f in flags if f not in README and f != "--help"]
    assert missing == []


def test_quick_start_installs_cpu_torch_first() -> None:
    setup = next(line for line in README.splitlines() if line.startswith("python3 -m venv"))
    assert setup.index("pip install torch==2.13.0") < setup.index("pip install -e")


def _squash(text: str) -> str:
    return " ".join(text.replace("\\\n", " ").split())


def test_ci_runs_the_readme_quick_start() -> None:
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text(encoding="utf-8")
    blocks = README.split("## Quick start", 1)[1].split("```bash\n")[1:3]
    setup, tests = (b.split("```", 1)[0].strip() for b in blocks)
    assert _squash(setup) in _squash(ci)
    assert _squash(tests) in _squash(ci)


def test_quick_start_command_1_installs_only_what_training_needs() -> None:
    blocks = README.split("## Quick start", 1)[1].split("```bash\n")[1:3]
    setup, tests = (b.split("```", 1)[0].strip() for b in blocks)
    assert "pip install -e . " in setup and "[test]" not in setup
    assert "pip install -e '.[test]'" in tests and tests.endswith("python -m pytest")


def _ci_code() -> str:
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text(encoding="utf-8")
    return "\n".join(line for line in ci.splitlines() if not line.lstrip().startswith("#"))


def test_ci_fails_when_pytest_collects_no_tests() -> None:
    """pytest exits 5 when it collects nothing: CI must not turn that into success."""
    code = _ci_code()
    assert "set -euo pipefail" in code
    assert "-eq 5" not in code and "rc=0" not in code and "|| true" not in code
    # every step's failure is remembered and fails the run at the end
    assert code.count("failed+=(") == 2  # the default tier, and step()
    assert code.rstrip().endswith("exit 1\nfi")


def test_ci_runs_the_slow_tier_lint_format_and_types() -> None:
    code = _ci_code()
    for command in (
        "step python -m pytest -m slow",
        "step ruff check offrl tests benchmarks",
        "step ruff format --check offrl tests benchmarks",
        "step mypy offrl",
    ):
        assert command in code, command


def test_ci_step_fails_the_run_but_runs_the_next_step(tmp_path: Path) -> None:
    """The step() of .ci/run, run on its own: a failing step is reported and fails the run."""
    code = _ci_code()
    start = code.index("step() {")
    step = code[start : code.index("\n}\n", start) + 3]
    end = code[code.index("if ((${#failed[@]}))") :]
    script = "\n".join(
        ["set -euo pipefail", "failed=()", "started=$SECONDS", step, "step true", "step false"]
        + ["step echo after", 'echo "=== ci: $((SECONDS - started)) s in all"', end]
    )
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert "FAILED (exit 1" in proc.stdout and "after" in proc.stdout
    assert "failed: false (exit 1)" in proc.stdout
    ok = subprocess.run(["bash", "-c", script.replace("step false\n", "")], capture_output=True)
    assert ok.returncode == 0


def test_training_dependencies_leave_out_the_test_tools() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    core = " ".join(project["dependencies"]).lower()
    for tool in ("moto", "boto3", "s3fs", "pandas", "pyarrow", "tensorboard", "flask", "pytest"):
        assert tool not in core, tool
    test = " ".join(project["optional-dependencies"]["test"]).lower()
    for tool in ("moto", "s3fs", "pandas", "pyarrow", "tensorboard", "pytest"):
        assert tool in test, tool


def test_plain_pytest_runs_the_default_tier_and_the_readme_says_how_to_run_the_slow_one() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    pytest_ini = tomllib.loads(pyproject.read_text(encoding="utf-8"))["tool"]["pytest"]
    assert "-m 'not slow'" in pytest_ini["ini_options"]["addopts"]
    assert any(m.startswith("slow:") for m in pytest_ini["ini_options"]["markers"])
    development = README.split("## Development", 1)[1]
    assert "python -m pytest -m slow" in development
    assert "python -m pytest -m slow" in README.split("## Quick start", 1)[1].split("##", 1)[0]
