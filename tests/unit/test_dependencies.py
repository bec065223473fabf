"""Every declared dependency is imported somewhere and every imported one is declared (deptry, configured
in pyproject.toml): the design card's packages are the ones the code uses, no more, no fewer."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_declared_dependencies_are_the_imported_ones():
    deptry = Path(sys.executable).with_name("deptry")
    done = subprocess.run([str(deptry), "."], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={"PATH": "", "NO_COLOR": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "No dependency issues found" in done.stdout + done.stderr
