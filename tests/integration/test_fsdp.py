"""``--shard fsdp`` on two CPU processes (gloo): the frozen base in FSDP2 shards, every method trains to
the weights and matrix of one unsharded process, each process holds half of every sharded weight,
and a sharded run resumed after a stop gives the uninterrupted matrix.

One ``torchrun`` launch runs every method on the two-task quick slice (tests/integration/fsdp_runs.py);
the unsharded references run here, in this process.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from mcit_bench.cli import app
from mcit_bench.config import RunConfig
from mcit_bench.core.errors import ConfigError
from mcit_bench.engine.run import run_stream
from mcit_bench.engine.sharding import check_can_shard, predicted_bytes, shard_units
from mcit_bench.methods.registry import METHODS as REGISTERED
from mcit_bench.models.loading import PRECISIONS, load_model
from tests.conftest import FIXTURES, QUICK_OPTIONS
from tests.integration.trained_alike import assert_trained_alike

pytestmark = pytest.mark.slow

QUICK = str(FIXTURES / "two_task_quick.yaml")

STEPS = 4
# every registered method that declares it shards (the others are refused, tested below); seqft first:
# it is also the one stopped and resumed
METHODS = ["seqft"] + [name for name in REGISTERED.names()
                       if name != "seqft" and REGISTERED.get(name).capabilities.can_shard]
# dropout draws its masks per process, so two processes drop other units than one: compared without it
OPTIONS = {name: {**QUICK_OPTIONS.get(name, {}),
                  **({"dropout": 0.0} if "dropout" in REGISTERED.get(name).Options.model_fields else {})}
           for name in METHODS}
# a resumed sharded run against the uninterrupted one: the same sums in the same order
WEIGHT_TOLERANCE = 1e-5
TEST_SAMPLES = 4  # per task in the quick slice: the matrices may differ by one answer


@pytest.fixture(scope="module")
def sharded(tmp_path_factory, cache_root):
    out = tmp_path_factory.mktemp("fsdp")
    script = Path(__file__).with_name("fsdp_runs.py")
    torchrun = Path(sys.executable).with_name("torchrun")
    specs = [f"{method}:{QUICK}:{STEPS}:{json.dumps(OPTIONS[method])}" for method in METHODS]
    done = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_port", "29523", str(script),
                           str(out), str(cache_root)] + specs,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return out


@pytest.fixture(scope="module")
def unsharded(tmp_path_factory, cache_root):
    out = tmp_path_factory.mktemp("one")
    for method in METHODS:
        config = RunConfig(method=method, sequence=QUICK, method_options=OPTIONS.get(method, {}),
                           training={"steps_per_task": STEPS, "batch_size": 16})
        run_stream(config, out, cache_root=cache_root)
    return out


def run_dir(root: Path, method: str) -> Path:
    return root / "two-task-quick" / method / "seed0"


@pytest.mark.parametrize("method", METHODS)
def test_two_sharded_processes_train_as_one_unsharded(sharded, unsharded, method):
    one, two = run_dir(unsharded, method), run_dir(sharded / "runs", method)
    results_one = json.loads((one / "results.json").read_text())
    results_two = json.loads((two / "results.json").read_text())
    assert results_two["run"]["config"]["shard"] == "fsdp" and "shard" not in results_one["run"]["config"]
    np.testing.assert_allclose(results_two["matrix"], results_one["matrix"], atol=100 / TEST_SAMPLES + 1e-9)
    last = f"stage{len(results_one['stages'])}"
    # what trained, written whole
    assert_trained_alike(load_file(str(one / "checkpoints" / last / "weights.safetensors")),
                         load_file(str(two / "checkpoints" / last / "weights.safetensors")),
                         results_one["run"]["config"]["training"]["lr"])
    assert results_two["stages"][-1]["task_selection"] == results_one["stages"][-1]["task_selection"]
    # each process recorded what it held: half of the base in shards, the trained part whole
    ranks = results_two["cost"]["per_rank"]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["peak_memory_mb"] > 0 for r in ranks)
    assert ranks[0]["param_bytes_replicated"] == ranks[1]["param_bytes_replicated"]
    alone = results_one["cost"]["per_rank"]
    assert len(alone) == 1 and alone[0]["param_bytes_sharded"] == 0 and ranks[0]["param_bytes_sharded"] > 0
    assert ranks[0]["param_bytes_sharded"] + ranks[0]["param_bytes_replicated"] < alone[0]["param_bytes_replicated"]


def test_each_process_holds_half_of_every_sharded_weight(sharded):
    held = [json.loads((sharded / f"shards-rank{rank}.json").read_text()) for rank in (0, 1)]
    shapes = held[0]["shapes"]
    assert shapes.keys() == held[1]["shapes"].keys() and len(shapes) > 0
    for name, shape in shapes.items():
        first = shape["global"][0]
        assert held[0]["shapes"][name]["local"][0] == -(-first // 2), name  # FSDP2 cuts dim 0 in two
        assert held[0]["shapes"][name]["local"][0] + held[1]["shapes"][name]["local"][0] == first, name
        assert shape["local"][1:] == shape["global"][1:], name
    # the sharded modules: what each process holds against what one process would (the formula's test)
    model, _ = load_model("mcit-tiny", PRECISIONS["fp32"])
    alone = predicted_bytes(model, keep=set(), processes=1)
    halves = predicted_bytes(model, keep=set(), processes=2)
    assert held[0]["bytes"] == halves and alone["replicated"] == halves["replicated"]
    assert held[1]["bytes"]["sharded"] <= halves["sharded"]
    assert held[0]["bytes"]["sharded"] <= 0.55 * alone["sharded"]
    unit_params = {id(p) for unit in shard_units(model) for p in unit.parameters()}
    assert alone["sharded"] == sum(p.numel() * 4 for p in model.parameters() if id(p) in unit_params)


def test_a_sharded_run_resumed_gives_the_uninterrupted_matrix(sharded):
    resumed = json.loads((run_dir(sharded / "resumed", "seqft") / "results.json").read_text())
    uninterrupted = json.loads((run_dir(sharded / "runs", "seqft") / "results.json").read_text())
    assert resumed["matrix"] == uninterrupted["matrix"]
    last = run_dir(sharded / "resumed", "seqft") / "checkpoints" / "stage2" / "weights.safetensors"
    reference = load_file(str(run_dir(sharded / "runs", "seqft") / "checkpoints" / "stage2" / "weights.safetensors"))
    for name, value in load_file(str(last)).items():
        np.testing.assert_allclose(value.numpy(), reference[name].numpy(), atol=WEIGHT_TOLERANCE, err_msg=name)


def test_a_sharded_run_is_scored_and_submitted_by_one_process(sharded):
    from mcit_bench.results.scoring import rescore_run

    results, changes = rescore_run(run_dir(sharded / "runs", "branchlora"))
    assert changes == [] and results["run"]["config"]["shard"] == "fsdp"


@pytest.mark.parametrize("processes,can_shard,full,message", [
    (1, True, False, "--shard fsdp needs at least two processes to shard over; launch with torchrun"),
    (2, False, False, "method 'plugin' declares that it cannot run sharded; drop --shard fsdp for it"),
    (2, True, True, "--shard fsdp shards the frozen base model, and method .plugin. with these options trains"),
])
def test_a_run_that_cannot_shard_is_refused(processes, can_shard, full, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_can_shard("plugin", can_shard, processes, full)


def test_a_model_without_layer_classes_is_refused():
    from torch import nn

    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 4)

    with pytest.raises(ConfigError, match="--shard fsdp found no layer classes in Plain"):
        shard_units(Plain())


def test_one_process_with_shard_is_refused_on_the_command_line(tmp_path):
    result = CliRunner().invoke(app, ["run", "--sequence", QUICK, "--shard", "fsdp", "--output", str(tmp_path)])
    assert result.exit_code == 2
    assert "--shard fsdp needs at least two processes" in " ".join(result.output.split())
    assert not (tmp_path / "two-task-quick").exists()  # refused before the run directory was made


def test_a_block_folded_into_a_sharded_weight_lands_in_each_process_rows(tmp_path):
    """RegLoRA and KeepLoRA fold each task's block into the layer's weight; under --shard fsdp that
    weight is a DTensor of which each process holds rows (three and two of five here)."""
    torchrun = Path(sys.executable).with_name("torchrun")
    out = tmp_path / "fold.json"
    done = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_port", "29529",
                           str(Path(__file__).with_name("fold_sharded.py")), str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["local_rows"] == 3 and report["moved"] > 0.1
    assert report["max_error"] <= 1e-6  # alpha / rank = 1.5 times B A, added row by row where each row lives
