"""Run configuration: frozen, typed, unknown keys refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mcit_bench.core.errors import ConfigError, first_problem, yaml_problem


class _Strict(BaseModel):
    # an infinite or NaN setting (lr: .inf) is refused like any other bad value
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


SEED_LIMIT = 2**32  # numpy's seeds, and a stage's seed (seed x 1,000,003 + stage) within torch's 64 bits


class TrainingConfig(_Strict):
    batch_size: int = Field(default=32, gt=0)  # samples of one forward pass, over all processes
    # micro-batches per optimiser step: the global batch is batch_size x grad_accum, and the NLL is
    # the mean over that whole batch's answer tokens, so 8 x 4 trains as 32 x 1 does
    grad_accum: int = Field(default=1, gt=0)
    steps_per_task: int | None = Field(default=None, gt=0)  # None: the stream's budget, else one epoch
    epochs: float = Field(default=1.0, gt=0)  # used when neither this config nor the stream sets steps
    lr: float = Field(default=1e-3, gt=0)
    # the projector moves ten times slower than LoRA, CoIN's ratio (2e-5 vs 2e-4): at the LoRA rate
    # it overwrites the pre-trained visual features within a task
    projector_lr: float | None = Field(default=1e-4, gt=0)  # None: same as lr
    warmup_ratio: float = Field(default=0.03, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    max_grad_norm: float = Field(default=1.0, gt=0)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    # recompute activations in the backward pass: less memory for 7B/13B models, same results
    gradient_checkpointing: bool = False
    # tokens of a training sequence, prompt and image placeholders included; None: the model's own
    # limit (mcit_bench.models.loading.sequence_limit)
    max_length: int | None = Field(default=None, gt=0)


class EvalConfig(_Strict):
    batch_size: int = Field(default=64, gt=0)
    max_new_tokens: int = Field(default=24, gt=0)


class ValidationSplit(_Strict):
    """A tuning trial's split: carved from each task's training data, which it then no longer trains on.

    The carve depends only on ``seed`` and the data, so every trial of every method is scored on the
    same samples; the test split is never read.
    """

    fraction: float = Field(default=0.1, gt=0, lt=1)
    max_per_task: int = Field(default=100, gt=0)
    seed: int = Field(default=0, ge=0, lt=SEED_LIMIT)


class TunedFrom(_Strict):
    """Where a run's tuned settings came from: the study, its budget and the chosen trial."""

    study: str
    trials: int = Field(gt=0)  # the equal budget: trials per method
    best_trial: int = Field(ge=0)
    validation_final_acc: float
    params: dict[str, Any]


def split_scored(validation: ValidationSplit | None) -> str:
    """What a run's matrix was scored on, for tables and messages (``validation``: its config's)."""
    if validation is None:
        return "the test split"
    return (f"a validation split carved from the training data ({validation.fraction:g} of each task's, at "
            f"most {validation.max_per_task}, seed {validation.seed})")


class RunConfig(_Strict):
    """Everything that determines a run's results (and nothing that does not, like output paths)."""

    method: str = "seqft"
    method_options: dict[str, Any] = {}
    sequence: str = "synth-coin"
    subset: str | None = None
    variant: str | None = None  # instruction variant of sequences that have them (None: the first)
    model: str = "mcit-tiny"
    # bf16: frozen weights stored in bfloat16 and matrix products in bfloat16 (autocast); what a
    # method trains stays in float32 for the optimizer
    precision: Literal["fp32", "bf16"] = "fp32"
    seed: int = Field(default=0, ge=0, lt=SEED_LIMIT)
    training: TrainingConfig = TrainingConfig()
    eval: EvalConfig = EvalConfig()
    # "fsdp": the frozen base model sharded over the processes with FSDP2 (mcit_bench/engine/sharding.py)
    shard: Literal["fsdp"] | None = None
    # a tuning trial: trained without, and scored on, a validation split carved from the training data
    validation: ValidationSplit | None = None
    # a run whose settings a ``mcit-bench tune`` study chose (None: the methods' defaults)
    tuned: TunedFrom | None = None
    # method options that hold for one stage only, by stage (1-based): the stability setting the
    # plasticity protocol (``tune --protocol plasticity``) chooses for each new task; None: none
    stage_options: dict[int, dict[str, Any]] | None = None
    # the frozen CLIP whose image and instruction features guide a method that reads one (a folder, a
    # cached hub id, or mcit-tiny-guide); None: the method's default (mcit-tiny-guide on generated streams)
    guide_encoder: str | None = Field(default=None, min_length=1)

    @field_validator("stage_options")
    @classmethod
    def _stages_count_from_one(cls, value: dict[int, dict[str, Any]] | None) -> dict[int, dict[str, Any]] | None:
        if value is not None and any(stage < 1 for stage in value):
            raise ValueError("stages are numbered from 1 (the stage after the first task)")
        return value

    def as_json(self) -> dict[str, Any]:
        """The config as run directories and results record it; the tuning fields only when set, so
        the configs of runs made before they existed still match."""
        dumped = self.model_dump(mode="json")
        dumped["training"] = {key: value for key, value in dumped["training"].items()
                              if key not in OPTIONAL_TRAINING_RECORDS or value is not None}
        return {key: value for key, value in dumped.items() if key not in OPTIONAL_RECORDS or value is not None}


OPTIONAL_RECORDS = ("shard", "validation", "tuned", "stage_options", "guide_encoder")
OPTIONAL_TRAINING_RECORDS = ("max_length",)


def parse_run_config(raw: dict[str, Any], source: str) -> RunConfig:
    """Validate a raw mapping; the first problem becomes one sentence naming the field."""
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as error:
        field, message = first_problem(error)
        raise ConfigError(f"{source} field {field}: {message}") from None


def load_config_file(path: Path) -> dict[str, Any]:
    import yaml

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a folder; pass the YAML file of run settings") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text; save it as UTF-8 YAML") from None
    except RecursionError:
        raise ConfigError(f"config file {path} is nested too deeply to be run settings") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML ({yaml_problem(error)}); fix its syntax") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings")
    return raw
