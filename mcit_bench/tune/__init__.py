"""``mcit-bench tune``: the two protocols that choose a method's settings on a validation split.

- ``study``: the equal-budget search (every method the same number of trials of whole runs, Optuna);
- ``plasticity``: De Lange et al.'s continual hyper-parameter framework (TPAMI 2021), task by task.
"""

from mcit_bench.tune.plasticity import PlasticityRequest, plasticity_protocol
from mcit_bench.tune.study import (
    TuneRequest,
    check_space,
    method_space,
    open_study,
    read_space_file,
    read_tuning,
    seen_mean,
    tune,
    tuned_config,
    tuning_summary,
)

__all__ = ["PlasticityRequest", "TuneRequest", "check_space", "method_space", "open_study", "plasticity_protocol",
           "read_space_file", "read_tuning", "seen_mean", "tune", "tuned_config", "tuning_summary"]
