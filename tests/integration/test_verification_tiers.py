"""The verification tiers of a submission (docs/RESULTS.md): issue 30's forgeries, each refused at the
tier that disproves it, on a finished run of the quick two-task stream."""

import json
import shutil

import pytest

import mcit_bench.board.submit as board
from mcit_bench.board.submit import Proof
from mcit_bench.config import RunConfig
from mcit_bench.core.errors import ConfigError, DataError
from mcit_bench.core.io import file_digest
from mcit_bench.engine.reproduce import reproduce_run
from mcit_bench.engine.run import run_stream
from mcit_bench.results.scoring import rescore_run
from tests.conftest import FIXTURES

pytestmark = pytest.mark.slow

QUICK = str(FIXTURES / "two_task_quick.yaml")


@pytest.fixture(scope="module")
def finished(tmp_path_factory, cache_root):
    output = tmp_path_factory.mktemp("runs")
    results = run_stream(RunConfig(method="seqft", sequence=QUICK, seed=0), output, cache_root=cache_root)
    return output / "two-task-quick" / "seqft" / "seed0", results


@pytest.fixture
def shipped(finished, monkeypatch, cache_root):
    """The quick stream stands in for a shipped sequence; references are generated under the test cache."""
    sequence = finished[1]["run"]["sequence"]
    monkeypatch.setattr(board, "shipped_sequence", lambda *_: (sequence["version"], sequence["content_hash"]))
    monkeypatch.setattr(board, "shipped_tasks", lambda *_: sequence["tasks"])
    return Proof(cache_root=cache_root)


def reproducing(proof: Proof) -> Proof:
    return Proof(proof.data_root, proof.cache_root,
                 lambda results, run_dir: reproduce_run(results, run_dir, cache_root=proof.cache_root))


def forge(run_dir, tmp_path, name: str, edit) -> tuple:
    """A copy of the run whose stage-2 TextVQA predictions file is edited line by line, its digest
    recorded anew and the run re-scored: a forgery that is self-consistent."""
    copy = tmp_path / name
    shutil.copytree(run_dir, copy)
    predictions = copy / "predictions" / "stage2" / "textvqa.jsonl"
    lines = [json.loads(line) for line in predictions.read_text().splitlines()]
    for line in lines:
        edit(line)
    predictions.write_text("".join(json.dumps(line) + "\n" for line in lines))
    document = json.loads((copy / "results.json").read_text())
    document["prediction_digests"]["stage2/textvqa.jsonl"] = file_digest(predictions)
    (copy / "results.json").write_text(json.dumps(document))
    rescored, _ = rescore_run(copy)
    return copy, rescored


def test_an_untouched_run_is_verified_and_reproduced(finished, shipped, tmp_path):
    run_dir, results = finished
    [entry] = board.submit_all([run_dir], tmp_path / "board.json", proof=shipped)
    assert entry.tier == "verified"
    [entry] = board.submit_all([run_dir], tmp_path / "board.json", replace=True, proof=reproducing(shipped))
    assert entry.tier == "reproduced" and entry.matrix == results["matrix"]
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(run_dir / "results.json", alone / "results.json")
    [entry] = board.submit_all([alone / "results.json"], tmp_path / "other.json", proof=shipped)
    assert entry.tier == "unverified"
    with pytest.raises(DataError, match="--reproduce needs the run directory"):
        board.submit_all([alone / "results.json"], tmp_path / "other.json", replace=True, proof=reproducing(shipped))


def test_predictions_that_bring_their_own_references_are_refused(finished, shipped, tmp_path, monkeypatch):
    """References set to the model's answers score high and re-score consistently; the test split
    regenerated from the stream's identity names the first line whose references are not its own."""
    run_dir, results = finished
    ten_annotators = lambda line: line.update(answers=[line["prediction"]] * 10)  # noqa: E731
    forged, rescored = forge(run_dir, tmp_path, "references", ten_annotators)
    assert rescored["matrix"][2][1] == 75.0 > results["matrix"][2][1]  # an empty answer scores nothing
    leaderboard = tmp_path / "board.json"
    with pytest.raises(DataError, match=r"stage2/textvqa\.jsonl line 1 has answers .*, not the test split's"):
        board.submit_all([forged], leaderboard, proof=shipped)
    assert not leaderboard.exists()
    # where the test split cannot be read (a published stream submitted without --data-root) the same
    # forgery is only self-checked, and every view says so
    import mcit_bench.data.prepare as prepare

    def no_data_root(*_):
        raise ConfigError("sequence reads published data: pass --data-root")

    monkeypatch.setattr(prepare, "test_references", no_data_root)
    [entry] = board.submit_all([forged], leaderboard, proof=shipped)
    assert entry.tier == "self-checked"


def test_a_dropped_prediction_is_refused_by_the_count(finished, shipped, tmp_path):
    run_dir, _ = finished
    copy = tmp_path / "dropped"
    shutil.copytree(run_dir, copy)
    predictions = copy / "predictions" / "stage1" / "imagenet.jsonl"
    predictions.write_text("".join(line + "\n" for line in predictions.read_text().splitlines()[1:]))
    document = json.loads((copy / "results.json").read_text())
    document["prediction_digests"]["stage1/imagenet.jsonl"] = file_digest(predictions)
    (copy / "results.json").write_text(json.dumps(document))
    rescore_run(copy)
    with pytest.raises(DataError, match=r"stage1/imagenet\.jsonl has 3 answers and the test split of imagenet has "
                                        r"4 samples"):
        board.submit_all([copy], tmp_path / "board.json", proof=shipped)


def test_issue_30s_forgery_passes_verification_and_fails_reproduction(finished, shipped, tmp_path):
    """Every answer set to its reference, digests recomputed, re-scored: the predictions answer the
    real test split, so it is 'verified'; training again names the first answer the model never gave."""
    run_dir, results = finished
    forged, rescored = forge(run_dir, tmp_path, "answers", lambda line: line.update(prediction=line["answers"][0]))
    assert rescored["matrix"][2][1] == 100.0 and results["matrix"][2][1] < 100.0
    [entry] = board.submit_all([forged], tmp_path / "board.json", proof=shipped)
    assert entry.tier == "verified"
    lines = [json.loads(line) for line in (run_dir / "predictions/stage2/textvqa.jsonl").read_text().splitlines()]
    first = next(number for number, line in enumerate(lines, start=1) if line["prediction"] != line["answers"][0])
    given, forged_answer = lines[first - 1]["prediction"], lines[first - 1]["answers"][0]
    with pytest.raises(DataError, match=rf"the run answers predictions/stage2/textvqa\.jsonl line {first} with "
                                        rf"'{given}' .* where the submitted predictions have '{forged_answer}' .*"
                                        rf"did not come from this config and seed"):
        board.submit_all([forged], tmp_path / "board.json", replace=True, proof=reproducing(shipped))


def test_an_edited_seed_fails_reproduction(finished, shipped, tmp_path):
    run_dir, _ = finished
    edited = tmp_path / "seed"
    shutil.copytree(run_dir, edited)
    for name in ("results.json", "config.json"):
        document = json.loads((edited / name).read_text())
        if name == "results.json":
            document["run"]["seed"] = document["run"]["config"]["seed"] = 1
        else:
            document["seed"] = 1
        (edited / name).write_text(json.dumps(document))
    [entry] = board.submit_all([edited], tmp_path / "board.json", proof=shipped)
    assert (entry.tier, entry.seed) == ("verified", 1)  # nothing in the predictions says which seed made them
    with pytest.raises(DataError, match="did not come from this config and seed"):
        board.submit_all([edited], tmp_path / "board.json", replace=True, proof=reproducing(shipped))
    # an edit of the entry's seed alone contradicts the config the run recorded
    document = json.loads((edited / "results.json").read_text())
    document["run"]["seed"] = 2
    (edited / "results.json").write_text(json.dumps(document))
    with pytest.raises(DataError, match="results.json names seed 2 .* but the config it records has seed 1"):
        board.submit_all([edited], tmp_path / "board.json", replace=True, proof=reproducing(shipped))


def test_submit_reproduce_on_the_command_line(finished, shipped, tmp_path):
    from typer.testing import CliRunner

    from mcit_bench.cli import app

    run_dir, _ = finished
    board_file = tmp_path / "board.json"
    done = CliRunner().invoke(app, ["submit", str(run_dir), "--reproduce", "--cache-dir", str(shipped.cache_root),
                                    "--leaderboard", str(board_file)])
    assert done.exit_code == 0, done.output
    assert "(reproduced: trained again from its config and seed, the same predictions)" in " ".join(done.output.split())
    assert [entry["tier"] for entry in json.loads(board_file.read_text())["entries"]] == ["reproduced"]
