"""Two processes on CPU (gloo, through torchrun) give the matrix of one process: each takes
half of every global batch, evaluation is sharded and gathered with no answer lost or doubled. Eight
steps a task: what is compared is how the work is split, not how far the model learns."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FIXTURES

pytestmark = pytest.mark.slow

# one test sample of the 16 per task: DDP averages the two halves' mean losses, which weighs answer
# tokens slightly differently from one process's mean over the whole batch
TOLERANCE = 100 / 16


def run(method: str, processes: int, output: Path, cache: Path) -> subprocess.CompletedProcess:
    # torchrun, not `accelerate launch --cpu --num_processes 2`: on a CPU-only machine the latter starts
    # a single process (checked below through each run's per-process record)
    bin_dir = Path(sys.executable).parent
    launch = [str(bin_dir / "torchrun"), "--nproc_per_node", str(processes), "--master_port", "29517", "-m",
              "mcit_bench.cli"] if processes > 1 else [str(bin_dir / "mcit-bench")]
    command = launch + ["run", "--method", method, "--sequence", str(FIXTURES / "two_task.yaml"),
                        "--steps-per-task", "8", "--output", str(output), "--cache-dir", str(cache)]
    return subprocess.run(command, capture_output=True, text=True, timeout=900)


# BranchLoRA exercises the most: DDP over LoRA branches and routers, frozen branches, label-free task
# selection gathered across processes (seqft, ewc and the rest take the same path with less on it)
def test_two_processes_reproduce_the_single_process_matrix(tmp_path, cache_root):
    method = "branchlora"
    results = {}
    for processes in (1, 2):
        done = run(method, processes, tmp_path / f"p{processes}", cache_root)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.count("Accuracy matrix R") == 1  # only the main process prints
        run_dir = tmp_path / f"p{processes}" / "two-task" / method / "seed0"
        results[processes] = json.loads((run_dir / "results.json").read_text())
    one, two = results[1], results[2]
    assert [rank["rank"] for rank in two["cost"]["per_rank"]] == [0, 1]  # two processes really ran
    assert all(abs(a - b) <= TOLERANCE for r1, r2 in zip(one["matrix"], two["matrix"]) for a, b in zip(r1, r2))
    assert one["stages"][-1]["task_selection"].keys() == two["stages"][-1]["task_selection"].keys()
    for stage in range(3):
        for task in ("imagenet", "textvqa"):
            lines = (run_dir / "predictions" / f"stage{stage}" / f"{task}.jsonl").read_text().splitlines()
            ids = [json.loads(line)["question_id"] for line in lines]
            assert len(ids) == 16 and len(set(ids)) == 16


def test_the_command_line_ends_the_process_group_a_launched_run_opened(tmp_path):
    """What every launched process does on its way out (mcit_bench.cli.main): a group left to the
    interpreter's exit can abort a finished run from gloo's threads."""
    import torch.distributed as dist

    from mcit_bench.cli import release_processes

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    assert dist.is_initialized()
    release_processes()
    assert not dist.is_initialized()
    release_processes()  # no group open: nothing to end
    assert not dist.is_initialized()
