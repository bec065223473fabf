"""One process's micro-batch text-only, the other's with an image: two processes under DDP and under
``--shard fsdp`` finish (the launch is killed and the test fails after a timeout, instead of hanging)
and train to one process's weights and matrix.

CoIN's ScienceQA from the published fixture tree has a text-only question in each split (the third
training sample, the second test one); with a batch of two over two processes each takes one sample
a step, so the steps that draw the text-only sample give one process no image at all, and evaluation
gives the second process the text-only test question.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mcit_bench.config import RunConfig
from mcit_bench.data.stream import load_stream, locate_stream
from mcit_bench.engine.run import run_stream
from mcit_bench.engine.train import batch_indices, stage_seed
from tests.conftest import FIXTURES
from tests.integration.trained_alike import assert_trained_alike

pytestmark = pytest.mark.slow

STREAM = FIXTURES / "text_only_quick.yaml"
DATA = FIXTURES / "published" / "coin"
METHODS = ["seqft", "branchlora", "dmole"]
BATCH = 2
LAUNCH_TIMEOUT = 600  # seconds for one launch of every method; a hang fails here
TEST_SAMPLES = 2  # per task: the matrices may differ by one answer


def test_some_step_gives_one_process_the_text_only_sample_alone():
    """The premise of the runs below, from the loop's own batch draw: in some step of the first
    stage one process holds the text-only sample and the other an image one."""
    stream = load_stream(str(STREAM))
    train = json.loads(next(iter(locate_stream(stream, DATA))).train.read_text())
    text_only = {index for index, sample in enumerate(train) if "image" not in sample}
    assert text_only == {2}
    steps = stream.task_steps()["sqa"]
    generator = torch.Generator().manual_seed(stage_seed(0, 1))
    split = [(batch[0::2], batch[1::2]) for batch in batch_indices(len(train), BATCH, steps, generator)]
    assert any((set(first) <= text_only) != (set(second) <= text_only) for first, second in split), split


def launch(mode: str, out: Path, cache: Path) -> None:
    torchrun = Path(sys.executable).with_name("torchrun")
    script = Path(__file__).with_name("text_only_runs.py")
    done = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_port", "29531", str(script), mode,
                           str(out), str(cache), str(STREAM), str(DATA), str(BATCH), *METHODS],
                          capture_output=True, text=True, timeout=LAUNCH_TIMEOUT)
    assert done.returncode == 0, done.stderr[-4000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cache_root) -> dict[str, Path]:
    out = {mode: tmp_path_factory.mktemp(mode) for mode in ("one", "ddp", "fsdp")}
    for method in METHODS:
        config = RunConfig(method=method, sequence=str(STREAM), training={"batch_size": BATCH})
        run_stream(config, out["one"], data_root=DATA, cache_root=cache_root)
    launch("ddp", out["ddp"], cache_root)
    launch("fsdp", out["fsdp"], cache_root)
    return out


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
@pytest.mark.parametrize("method", METHODS)
def test_two_processes_with_a_text_only_share_train_as_one(runs, mode, method):
    one, two = (runs[key] / "text-only-quick" / method / "seed0" for key in ("one", mode))
    results_one = json.loads((one / "results.json").read_text())
    results_two = json.loads((two / "results.json").read_text())
    assert [rank["rank"] for rank in results_two["cost"]["per_rank"]] == [0, 1]
    assert results_two["run"]["config"].get("shard") == ("fsdp" if mode == "fsdp" else None)
    np.testing.assert_allclose(results_two["matrix"], results_one["matrix"], atol=100 / TEST_SAMPLES + 1e-9)
    last = f"stage{len(results_one['stages'])}"
    assert_trained_alike(load_file(str(one / "checkpoints" / last / "weights.safetensors")),
                         load_file(str(two / "checkpoints" / last / "weights.safetensors")),
                         results_one["run"]["config"]["training"]["lr"])
    # the text-only test question was answered, once, by the process that held it
    lines = (two / "predictions" / last / "sqa.jsonl").read_text().splitlines()
    assert [json.loads(line)["question_id"] for line in lines] == ["5", "6"]
