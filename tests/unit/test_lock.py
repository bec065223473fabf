"""The reference environment's lock (issue 34): its pins against pyproject.toml's ranges, what a run
records of the environment, and the drift between two runs named beside their comparison."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mcit_bench.board.check import drift_among, drift_between
from mcit_bench.cli import app
from mcit_bench.core.errors import ConfigError
from mcit_bench.core.lock import (
    environment_record,
    lock_digest,
    lock_pins,
    lock_problems,
    pyproject_requirements,
    read_lock_file,
    shipped_lock_text,
)
from mcit_bench.results.document import parse_results
from tests.unit.test_leaderboard import results_doc, write_doc

REPO = Path(__file__).resolve().parents[2]

LOCK = """# a comment
accelerate==1.16.0 \\
    --hash=sha256:180885b6
numpy==2.4.6 \\
    --hash=sha256:0a1b
    # via accelerate
torch==2.13.0+cpu \\
    --hash=sha256:6746
Pillow[extra]==12.0.0
"""


def test_pins_are_read_by_canonical_name_with_local_versions():
    assert lock_pins(LOCK) == {"accelerate": "1.16.0", "numpy": "2.4.6", "torch": "2.13.0+cpu", "pillow": "12.0.0"}
    assert lock_digest(LOCK) == "cpu-" + __import__("hashlib").sha256(LOCK.encode()).hexdigest()[:12]


def test_a_lock_outside_the_ranges_is_named_requirement_by_requirement():
    problems = lock_problems(["torch>=2.4", "numpy>=3", "accelerate>=1.0", "pillow>=10.0", "pandas>=2.0",
                              "numpy>=3", "not a requirement ~~"], LOCK)
    # the CPU build's local version label is inside '>=2.4'; a repeated requirement is named once
    assert problems == ["numpy is pinned at 2.4.6, outside >=3", "pandas is not pinned",
                        "'not a requirement ~~' is not a requirement"]


def test_the_committed_lock_pins_every_requirement_within_its_range():
    text = read_lock_file(REPO / "lock" / "cpu.txt")
    assert lock_problems(pyproject_requirements(REPO / "pyproject.toml"), text) == []
    assert shipped_lock_text() == text  # the package ships the repository's lock


def test_the_environment_matches_a_lock_only_when_every_pin_is_installed():
    here = f"numpy=={version('numpy')}\ntorch=={version('torch')}\n"
    assert environment_record(here) == {"lock": lock_digest(here), "differs": []}
    other = here + "numpy-other-name==1.0\n" + f"pydantic==0.0.{1}\n"
    record = environment_record(other)
    assert record["lock"] is None
    assert record["differs"] == ["numpy-other-name not installed (lock 1.0)",
                                 f"pydantic {version('pydantic')} (lock 0.0.1)"]


def test_env_refuses_a_bad_lock_in_one_sentence(tmp_path):
    runner = CliRunner()
    bad = tmp_path / "lock.txt"
    bad.write_text("torch==2.13.0+cpu\n")
    done = runner.invoke(app, ["env", "--lock", str(bad), "--pyproject", str(REPO / "pyproject.toml")])
    assert done.exit_code == 2
    told = " ".join(done.output.split())
    assert told.startswith(f"error: lock {bad} does not satisfy") and "transformers is not pinned" in told
    assert told.endswith("rewrite it with 'bash .ci/lock'") and "torch" not in told.split("satisfy")[1].split(";")[0]
    bad.write_bytes(b"\xff\xfe")
    done = runner.invoke(app, ["env", "--lock", str(bad)])
    assert (done.exit_code, " ".join(done.output.split())) == (
        2, f"error: lock {bad} cannot be read (it is not UTF-8 text); name a lock written by 'bash .ci/lock'")
    with pytest.raises(ConfigError, match="cannot be read as a pyproject.toml"):
        pyproject_requirements(bad)
    done = runner.invoke(app, ["env", "--lock", str(REPO / "lock" / "cpu.txt"), "--pyproject",
                               str(REPO / "pyproject.toml")])
    assert done.exit_code == 0 and "the lock pins every requirement of" in done.output


def environment_of(doc: dict, **packages) -> dict:
    doc["run"]["packages"].update(packages)
    return doc


def test_check_names_the_package_two_runs_differ_in(tmp_path):
    """Two results that differ only in a package version: check compares them and names the version."""
    baseline = results_doc()
    current = environment_of(results_doc(), transformers="5.26.0")
    baseline["run"]["packages"]["transformers"] = "5.25.0"
    a, b = write_doc(tmp_path, "a.json", current), write_doc(tmp_path, "b.json", baseline)
    done = CliRunner().invoke(app, ["check", str(a), "--against", str(b)])
    assert done.exit_code == 0
    assert "note: the runs differ in where they ran: transformers 5.26.0 here, 5.25.0 in the baseline" in \
        " ".join(done.output.split())
    assert drift_between(parse_results(current, "a"), parse_results(current, "a")) is None


def test_leaderboard_of_runs_names_what_differs_among_them(tmp_path):
    docs = [results_doc(seed=seed) for seed in range(3)]
    docs[2]["run"]["device"] = "cuda: NVIDIA H100 x1"
    docs[0]["run"]["environment"] = {"lock": "cpu-0123456789ab", "differs": []}
    docs[1]["run"]["environment"] = {"lock": None, "differs": ["numpy 2.4.5 (lock 2.4.6)"]}
    loaded = [parse_results(doc, "doc") for doc in docs]
    assert drift_among(loaded) == (
        "the runs differ in where they ran: device cpu (2 runs), cuda: NVIDIA H100 x1 (1 run); "
        "environment lock cpu-0123456789ab (1 run), not recorded (a results file older than schema 3) (1 run), "
        "not the lock's (1 package differs) (1 run)")
    paths = [str(write_doc(tmp_path, f"{seed}.json", doc)) for seed, doc in enumerate(docs)]
    done = CliRunner().invoke(app, ["leaderboard", *paths, "--format", "json"])
    assert done.exit_code == 0
    assert "note: the runs differ in where they ran: device" in " ".join(done.output.split())
    assert json.loads(done.stdout)["rows"][0]["environment"] == "mixed"
