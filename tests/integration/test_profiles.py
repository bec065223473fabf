"""benchmarks/gpu_profile.py, known to work before a GPU is ever seen (the CPU check runs two methods
through the harness's training loop on the tiny LLaVA-1.5 at real image sizes, and every refusal comes
before anything is allocated, in one sentence with the estimate), and benchmarks/profile_method.py."""

import importlib.util
import re
import sys
import types
from pathlib import Path

import pytest
import torch

from mcit_bench.engine.memory import COIN_WORKLOAD, memory_terms, peaks, seqft_on_meta

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_profile.py"


@pytest.fixture(scope="module")
def profile():
    spec = importlib.util.spec_from_file_location("gpu_profile", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_profile"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_cpu_check_trains_each_method_and_prints_its_row(profile, capsys, tmp_path):
    code = profile.main(["--model", "tiny", "--device", "cpu", "--steps", "1", "--batch", "2",
                         "--methods", "seqft,smolora", "--cache-dir", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^\| (\w+) \| (\d+) \| (\d+) \| ([\d.]+) \| ([\d.]+) \| n/a \|$", out, re.MULTILINE)
    assert [row[0] for row in rows] == ["seqft", "smolora"]
    assert all(int(ms) > 0 and int(tokens) > 0 and float(peak) > 0 for _, ms, tokens, peak, _ in rows)
    # 576 image tokens a LLaVA-1.5 sample, plus the instruction and the answer
    assert "tiny on cpu" in out


def test_the_estimate_is_docs_distributed_table(profile):
    model, keep = seqft_on_meta("7b")
    expected = peaks(memory_terms(model, keep, 1, COIN_WORKLOAD))["training peak"]
    assert profile.estimated_peak("llava-1.5-7b", COIN_WORKLOAD, 1) == expected


def test_qwen25_vl_is_built_at_its_published_size(profile):
    from transformers import AutoModelForImageTextToText

    config, _ = profile.model_config("qwen2.5-vl-7b")
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16)
    language, vision = profile.language_and_vision_params(model)
    # Qwen2.5-VL-7B-Instruct: 7.07e9 language-model parameters without the head, 6.7e8 in the vision tower
    assert 7.0e9 < language < 7.2e9 and 6.0e8 < vision < 7.0e8


@pytest.mark.parametrize("argv,message", [
    (["--model", "llava-1.5-7b", "--device", "cpu"], "llava-1.5-7b is a real-size model and the device is the CPU"),
    (["--model", "tiny", "--methods", "seqft,nosuch", "--device", "cpu"], "unknown method 'nosuch'"),
])
def test_a_profile_that_cannot_run_here_says_why_in_one_sentence(profile, capsys, argv, message):
    assert profile.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_no_cuda_and_too_little_memory_are_refused_before_allocating(profile, monkeypatch):
    from mcit_bench.engine.memory import Workload

    small = Workload(micro_batch=16, sequence=700, eval_batch=16, eval_tokens=724)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(profile.ProfileError, match="no CUDA device"):
        profile.check_device("llava-1.5-7b", torch.device("cuda"), small, 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: types.SimpleNamespace(total_memory=16e9))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    with pytest.raises(profile.ProfileError, match=r"llava-1.5-13b needs about \d+\.\d GB a process .* Tesla T4 has "
                                                   r"16.0 GB"):
        profile.check_device("llava-1.5-13b", torch.device("cuda"), small, 1)


def test_the_step_profile_splits_training_and_evaluation_into_shares(capsys, tmp_path):
    spec = importlib.util.spec_from_file_location("profile_method", SCRIPT.with_name("profile_method.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["dmole", "--steps", "2", "--top", "3", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    training, evaluation = out.split("dmole: evaluation")
    for part, hook in ((training, "method.before_step"), (evaluation, "method.route")):
        phases = dict(re.findall(r"^  (\S.*?)\s+([\d.]+)%$", part, re.MULTILINE))
        assert hook in phases  # D-MoLE's router embedding is its own hook's time
        assert sum(float(share) for share in phases.values()) == pytest.approx(100.0, abs=0.2)
    assert module.main(["nosuch"]) == 2
