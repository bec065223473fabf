"""The options ``run`` and ``tune`` share, declared once, and the flags a method declares for itself.

A setting left out on the command line is None and keeps a ``--config`` file's value (or
RunConfig's default): a default flag must not silently turn a file's ``method: ewc`` back into
seqft. A method's options go through ``--option name=value``; a boolean option the method lists in
its ``Options.flags`` may also be given as ``--name`` (seqft's ``--full``), registered by the
method, not here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mcit_bench.core.errors import ConfigError

MethodName = Annotated[Optional[str], typer.Option(
    "--method", help="method (see 'mcit-bench ls methods'; default seqft); its own flags, such as seqft's --full, "
    "are listed there")]
Sequence = Annotated[Optional[str], typer.Option(help="task sequence name or YAML file (default synth-coin)")]
Subset = Annotated[Optional[str], typer.Option(help="a preset of the sequence, e.g. 'ci' (small, fast)")]
Variant = Annotated[Optional[str], typer.Option(help="instruction variant of the sequence (CoIN: original, "
                                                     "diverse, ten-types)")]
Model = Annotated[Optional[str], typer.Option(help="registered model, local folder or Hugging Face id "
                                                   "(default mcit-tiny)")]
Seed = Annotated[Optional[int], typer.Option(help="training seed (data order, initialisation; default 0)")]
DataRoot = Annotated[Optional[Path], typer.Option(help="folder with a real benchmark's files")]
Output = Annotated[Path, typer.Option(help="root of run directories")]
MethodOption = Annotated[list[str], typer.Option("--option", help="method option name=value (repeatable)")]
StepsPerTask = Annotated[Optional[int], typer.Option(help="training steps per task (default: the stream's)")]
BatchSize = Annotated[Optional[int], typer.Option(help="training micro-batch size (over all processes)")]
GradAccum = Annotated[Optional[int], typer.Option(help="micro-batches per optimiser step: the global batch is "
                                                       "batch size x this")]
Precision = Annotated[Optional[str], typer.Option(help="fp32 or bf16 (bfloat16 weights and autocast; float32 "
                                                       "for what trains)")]
ConfigFile = Annotated[Optional[Path], typer.Option("--config", help="YAML file of run settings, the fields of a "
                                                    "run's config.json (a flag given wins over it)")]
GuideEncoder = Annotated[Optional[str], typer.Option(help="CLIP folder or cached hub id guiding a method that reads "
                                                          "image-text features (default mcit-tiny-guide)")]
CacheDir = Annotated[Optional[Path], typer.Option(help="cache for generated data and arrow files")]

# a command that takes method flags passes what typer did not know on to method_flags()
TAKES_METHOD_FLAGS = {"allow_extra_args": True, "ignore_unknown_options": True}


@dataclass(frozen=True)
class RunSettings:
    """What the command line said about a run's config (None: not said)."""

    config: Path | None
    method: str | None
    sequence: str | None
    subset: str | None
    variant: str | None
    model: str | None
    options: list[str]
    precision: str | None
    training: dict[str, Any] = field(default_factory=dict)
    method_flags: list[str] = field(default_factory=list)  # what typer did not parse: the method's own flags
    guide_encoder: str | None = None


def raw_config(settings: RunSettings) -> dict[str, Any]:
    """The run settings of a config file with the command line's flags on top, before validation."""
    from mcit_bench.config import load_config_file

    raw: dict[str, Any] = load_config_file(settings.config) if settings.config else {}
    flags = {"method": settings.method, "sequence": settings.sequence, "subset": settings.subset,
             "variant": settings.variant, "model": settings.model, "precision": settings.precision,
             "guide_encoder": settings.guide_encoder}
    raw.update({key: value for key, value in flags.items() if value is not None})
    method_options = raw.get("method_options", {})
    if not isinstance(method_options, dict):
        raise ConfigError(f"{settings.config} field method_options must be a mapping of option names to values")
    training = raw.get("training", {})
    if not isinstance(training, dict):
        raise ConfigError(f"{settings.config} field training must be a mapping of training settings")
    raw["method_options"] = {**method_options, **parse_options(settings.options),
                             **method_flags(str(raw.get("method", "seqft")), settings.method_flags)}
    raw["training"] = {**training, **{key: value for key, value in settings.training.items() if value is not None}}
    return raw


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are read as YAML scalars (16, 0.5, true, text)."""
    import yaml

    options: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--option {pair!r} must look like name=value (for example lora_rank=8)")
        key, value = pair.split("=", 1)
        options[key.strip()] = yaml.safe_load(value)
    return options


def method_flags(method: str, given: list[str]) -> dict[str, Any]:
    """The options a method's own flags set (``--full``: ``full=True``); anything else is refused."""
    if not given:
        return {}
    from mcit_bench.methods.registry import METHODS

    declared = METHODS.get(method).Options.flags
    known = {f"--{name.replace('_', '-')}": name for name in declared}
    chosen = {}
    for flag in given:
        if flag not in known:
            offered = ", ".join(sorted(known)) or "none"
            raise ConfigError(f"{flag} is neither an option of this command nor a flag of method {method!r} "
                              f"(its flags: {offered}); see --help and 'mcit-bench ls methods'")
        chosen[known[flag]] = True
    return chosen
