"""A wheel built from the repository runs the harness outside the checkout, in a fresh venv.

Its `--subset ci` seqft run is also CI's seqft regression run: the test checks it against the committed
golden results, and with MCIT_BENCH_CI_RUNS set it leaves the run there for `.ci/run` to show (one run,
not two, in CI's fifteen minutes)."""

import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_wheel_installs_and_runs_the_ci_subset(tmp_path, cache_root):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(REPO)],
                   check=True, cwd=tmp_path)
    (wheel,) = wheels.glob("mcit_bench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "mcit_bench/baselines/seqft.py" in names and "mcit_bench/task_sequences/synth-coin.yaml" in names
    shipped = ("coin", "ucit", "dmole9", "trigap", "mllm-dcl", "mllm-acl")
    assert {f"mcit_bench/task_sequences/{name}.yaml" for name in shipped} <= set(names)
    assert "mcit_bench/models/mcit_tiny/model.safetensors" in names
    assert "mcit_bench/models/mcit_tiny_guide/model.safetensors" in names
    assert "mcit_bench/board/leaderboard_page.html" in names
    assert "mcit_bench/shipped_lock/cpu.txt" in names  # a run from the wheel says whether it ran in the lock
    assert {f"mcit_bench/evaluate_modules/mcit_{name}/{part}" for name in ("vqa_accuracy", "continual")
            for part in (f"mcit_{name}.py", "README.md")} <= set(names)
    assert not [name for name in names if name.split("/")[0] in ("baselines", "task_sequences", "tests")]
    # every package of the source tree is in the wheel (pyproject.toml lists them by hand)
    packages = {str(init.parent.relative_to(REPO)) for init in (REPO / "mcit_bench").rglob("__init__.py")}
    assert {package for package in packages if f"{package}/__init__.py" not in names} == set()

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    # the heavy dependencies come from this environment's site-packages, read-only; the package
    # itself comes only from the wheel (a .pth entry adds a path but runs none of that folder's hooks)
    target = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 check=True, capture_output=True, text=True).stdout.strip())
    (target / "host_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)], check=True)

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {**os.environ, "MCIT_BENCH_CACHE": str(cache_root), "PYTHONPATH": ""}
    where = subprocess.run([str(python), "-c", "import mcit_bench; print(mcit_bench.__file__)"], cwd=outside, env=env,
                           check=True, capture_output=True, text=True).stdout
    assert str(env_dir) in where  # the installed copy, not the checkout
    runs = Path(os.environ.get("MCIT_BENCH_CI_RUNS") or outside / "runs").resolve()
    result = subprocess.run([str(env_dir / "bin" / "mcit-bench"), "run", "--subset", "ci", "--method", "seqft",
                             "--output", str(runs), "--overwrite"],
                            cwd=outside, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Accuracy matrix R" in result.stdout and "BWT" in result.stdout
    run_dir = runs / "synth-coin" / "seqft" / "seed0-ci"
    check = subprocess.run([str(env_dir / "bin" / "mcit-bench"), "check", str(run_dir), "--against",
                            str(REPO / "tests" / "golden" / "ci-seqft.json"), "--tolerance", "5"],
                           cwd=outside, env=env, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-2000:]
    page = subprocess.run([str(env_dir / "bin" / "mcit-bench"), "leaderboard", str(run_dir), "--format", "html",
                           "--out", "board.html"], cwd=outside, env=env, capture_output=True, text=True)
    assert page.returncode == 0, page.stderr[-2000:]
    assert '"method": "seqft"' in (outside / "board.html").read_text()
