"""A run config file as a careless or hostile user writes it, fuzzed: whatever the YAML holds, reading
it (``raw_config``), validating it and building its method either gives a run config or refuses in
one sentence (a ``UserError``); no other exception, so the CLI never reaches its bug handler. A fixed
seed and example budget keep it bounded in CI (``--hypothesis-seed`` and a larger ``max_examples``
widen it on demand)."""

from __future__ import annotations

import math

import yaml
from hypothesis import given
from hypothesis import strategies as st

from mcit_bench.cli.options import RunSettings, raw_config
from mcit_bench.config import RunConfig, parse_run_config
from mcit_bench.core.errors import UserError
from mcit_bench.methods.registry import METHODS, build_method
from tests.conftest import fuzz_settings

# the names a config really has, so the fuzz reaches the validators and not only "unknown key"
KEYS = ["method", "method_options", "sequence", "subset", "variant", "model", "precision", "seed", "training",
        "eval", "shard", "validation", "tuned", "stage_options", "lr", "batch_size", "steps_per_task", "epochs",
        "lora_rank", "ewc_lambda", "lambda1", "rank", "experts", "dropout", "labels", "fraction", "1", "2", "0"]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(METHODS.names() + ["synth-coin", "ci", "fp32",
                                                                                         "fsdp", "[b]x[/b]"]),
    st.text(max_size=12))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                        st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)),
                      max_leaves=12)
CONFIGS = st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=6)


def dumped(value) -> str:
    """YAML of a generated value; NaN and infinities as YAML writes them."""
    return yaml.safe_dump(value, allow_unicode=True)


def one_sentence(error: UserError) -> bool:
    text = str(error)
    return bool(text) and "\n" not in text and "Traceback" not in text


@fuzz_settings(300)
@given(CONFIGS)
def test_any_config_file_is_a_run_config_or_one_sentence(tmp_path_factory, config):
    path = tmp_path_factory.mktemp("fuzz") / "run.yaml"
    path.write_text(dumped(config), encoding="utf-8")
    try:
        raw = raw_config(RunSettings(path, None, None, None, None, None, [], None))
        built = parse_run_config(raw, str(path))
        build_method(built)
    except UserError as error:
        assert one_sentence(error), str(error)
        return
    assert isinstance(built, RunConfig)
    assert all(math.isfinite(value) for value in (built.training.lr, built.training.epochs))


@fuzz_settings(200)
@given(st.binary(max_size=200))
def test_any_bytes_as_a_config_file_are_a_run_config_or_one_sentence(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "run.yaml"
    path.write_bytes(data)
    try:
        build_method(parse_run_config(raw_config(RunSettings(path, None, None, None, None, None, [], None)),
                                      str(path)))
    except UserError as error:
        assert one_sentence(error), str(error)
