"""Continual metrics against matrices computed by hand."""

import numpy as np
import pytest

from mcit_bench.scoring.continual import (
    avg_incremental_acc,
    bwt,
    final_acc,
    forgetting,
    fwt,
    mean_finetune_acc,
    summarize,
)

# rows: base, after task 1, after task 2, after task 3; columns: tasks 1..3
R = np.array([
    [10.0, 20.0, 5.0],
    [80.0, 30.0, 10.0],
    [60.0, 90.0, 20.0],
    [50.0, 70.0, 85.0],
])


def test_hand_computed_values():
    assert final_acc(R) == pytest.approx((50 + 70 + 85) / 3)
    assert mean_finetune_acc(R) == pytest.approx((80 + 90 + 85) / 3)
    assert avg_incremental_acc(R) == pytest.approx((80 + (60 + 90) / 2 + (50 + 70 + 85) / 3) / 3)
    assert bwt(R) == pytest.approx(((50 - 80) + (70 - 90)) / 2)  # -25
    assert forgetting(R) == pytest.approx(((80 - 50) + (90 - 70)) / 2)  # 25
    assert fwt(R) == pytest.approx(((30 - 20) + (20 - 5)) / 2)  # 12.5


def test_forgetting_uses_the_best_earlier_score_not_the_first():
    later_peak = R.copy()
    later_peak[2, 0] = 95.0  # task 1 improved while training task 2, then fell
    assert forgetting(later_peak) == pytest.approx(((95 - 50) + (90 - 70)) / 2)
    assert bwt(later_peak) == pytest.approx(bwt(R))  # BWT only compares with the score right after training


@pytest.mark.parametrize("seed", range(5))
def test_final_equals_mft_plus_scaled_bwt(seed):
    rng = np.random.default_rng(seed)
    tasks = int(rng.integers(2, 9))
    matrix = rng.uniform(0, 100, size=(tasks + 1, tasks))
    expected = mean_finetune_acc(matrix) + (tasks - 1) / tasks * bwt(matrix)
    assert final_acc(matrix) == pytest.approx(expected)


def test_single_task_has_no_transfer_metrics():
    one = np.array([[5.0], [70.0]])
    assert summarize(one) == {"final_acc": 70.0, "mean_finetune_acc": 70.0, "avg_incremental_acc": 70.0,
                              "bwt": None, "forgetting": None, "fwt": None}


def test_matrix_without_base_row_is_refused():
    with pytest.raises(ValueError, match="base row"):
        final_acc(np.zeros((3, 3)))
