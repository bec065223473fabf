"""The architecture's rules (import-linter contracts in pyproject.toml) hold, and a forbidden import
breaks them.

import-linter reads a package from its folder, and baselines/ installs inside mcit_bench from the top
of the repository; so the contracts are checked on a copy laid out as installed."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
SKIP = shutil.ignore_patterns("__pycache__", "mcit_tiny", "*.html", "*.json")


def installed_layout(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    shutil.copytree(PROJECT / "mcit_bench", root / "mcit_bench", ignore=SKIP)
    shutil.copytree(PROJECT / "baselines", root / "mcit_bench" / "baselines", ignore=SKIP)
    shutil.copy(PROJECT / "pyproject.toml", root / "pyproject.toml")
    return root


def lint(root: Path) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).with_name("lint-imports")), "pyproject.toml", "--no-cache"]
    return subprocess.run(command, cwd=root, env={"PYTHONPATH": str(root), "PATH": ""}, capture_output=True,
                          text=True, timeout=300)


def test_every_contract_holds(tmp_path):
    done = lint(installed_layout(tmp_path))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "Contracts: 8 kept, 0 broken." in done.stdout


@pytest.mark.parametrize("module,line,contract", [
    ("baselines/ewc.py", "import mcit_bench.baselines.seqft", "no plugin imports another"),
    ("data/stream.py", "import mcit_bench.scoring.task_metrics", "data never imports scoring"),
    ("core/boxes.py", "import mcit_bench.models.loading", "core imports nothing else of the project"),
    ("board/leaderboard.py", "import mcit_bench.cli", "nothing imports the command line"),
    ("engine/run.py", "import mcit_bench.baselines.dmole", "the library never imports a plugin"),
    ("baselines/lwf.py", "import mcit_bench.models.loading", "a plugin imports only methods, adapters, core"),
    ("board/stats.py", "import torch", "board and results never import torch, the engine or the models"),
    ("results/scoring.py", "import mcit_bench.models.anatomy", "board and results never import torch"),
    ("models/anatomy.py", "import mcit_bench.engine.sharding", "the floors: a module imports only from floors"),
])
def test_a_forbidden_import_breaks_its_contract(tmp_path, module, line, contract):
    root = installed_layout(tmp_path)
    target = root / "mcit_bench" / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    done = lint(root)
    assert done.returncode == 1
    broken = [row for row in done.stdout.splitlines() if row.endswith(" BROKEN")]
    assert any(row.startswith(contract) for row in broken), done.stdout[-3000:]


def test_each_built_in_plugin_registers_the_method_named_as_its_file():
    """What lets the leaderboard name the registered methods without importing them (and torch)."""
    from mcit_bench.methods.registry import METHODS

    assert METHODS.declared_names() == METHODS.names()


def test_the_independence_contract_names_every_plugin():
    """A plugin left out of 'no plugin imports another' could import any other unnoticed."""
    import tomllib

    contracts = tomllib.loads((PROJECT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    [independence] = [contract for contract in contracts if contract["type"] == "independence"]
    plugins = sorted(f"mcit_bench.baselines.{path.stem}" for path in (PROJECT / "baselines").glob("*.py")
                     if path.stem != "__init__")
    assert sorted(independence["modules"]) == plugins
