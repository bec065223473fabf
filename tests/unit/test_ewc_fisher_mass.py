"""benchmarks/ewc_fisher_mass.py recovers each task's Fisher from an online-EWC run's accumulated
importances (Omega_k = gamma Omega_{k-1} + F_k) and weighs what the last task trains against."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from tests.conftest import benchmark_script


def script():
    return benchmark_script("ewc_fisher_mass")


def test_each_task_fisher_is_recovered_from_the_importances(tmp_path):
    gamma = 0.5
    fishers = [torch.tensor([1.0, 2.0]), torch.tensor([4.0, 0.0]), torch.tensor([0.5, 0.5])]
    omega = torch.zeros(2)
    for stage, fisher in enumerate(fishers, start=1):
        omega = gamma * omega + fisher  # 1, 2 / 4.5, 1 / 2.75, 1
        folder = tmp_path / "checkpoints" / f"stage{stage}"
        folder.mkdir(parents=True)
        save_file({"importance.w": omega, "anchor.w": torch.zeros(2)}, str(folder / "method_state.safetensors"))
    recovered = script().task_fishers(tmp_path, 3, gamma)
    for got, want in zip(recovered, fishers):
        assert torch.allclose(got["w"], want)


def test_shares_weigh_each_earlier_task_decayed_to_the_last():
    # masses 3, 4, 1 with gamma 0.5: the last task trains against 3 * 0.5 + 4 = 5.5
    assert script().shares_at_last_task([3.0, 4.0, 1.0], 0.5) == pytest.approx([100 * 1.5 / 5.5, 100 * 4 / 5.5])
