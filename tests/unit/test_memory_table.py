"""docs/DISTRIBUTED.md's memory table is what mcit_bench.engine.memory computes from LLaVA-1.5-7B and -13B
built on the meta device, and its terms are the hand-computed ones."""

import pytest

from mcit_bench.engine.memory import COIN_WORKLOAD, memory_table, memory_terms, peaks, seqft_on_meta
from mcit_bench.engine.sharding import predicted_bytes
from tests.conftest import BENCHMARKS

DOC = BENCHMARKS.parent / "docs" / "DISTRIBUTED.md"


@pytest.fixture(scope="module")
def seven_b():
    return seqft_on_meta("7b")


def test_the_documented_table_is_the_computed_one():
    assert memory_table() in DOC.read_text()


def test_the_7b_terms_by_hand(seven_b):
    model, keep = seven_b
    lora = 32 * 128 * (4 * (4096 + 4096) + 2 * (4096 + 11008) + (11008 + 4096))  # rank 128 on 7 linears a layer
    projector = 1024 * 4096 + 4096 + 4096 * 4096 + 4096
    assert sum(p.numel() for p in keep) == lora + projector == 319_815_680 + 20_979_712
    base = sum(p.numel() for p in model.parameters() if p not in keep)
    terms = memory_terms(model, keep, 8, COIN_WORKLOAD)
    trained = lora + projector
    assert terms["trained weights (fp32)"] == terms["their gradients (fp32)"] == 4 * trained
    assert terms["AdamW's two moments (fp32)"] == 8 * trained
    assert terms["flat gradient buffer (fp32)"] == 4 * trained and memory_terms(
        model, keep, 1, COIN_WORKLOAD)["flat gradient buffer (fp32)"] == 0
    assert terms["autocast copies of the trained weights (bf16)"] == 2 * trained
    tokens = 16 * 700
    assert terms["logits (bf16, and fp32 for the loss)"] == tokens * 32064 * 6
    assert terms["activations (bf16)"] == 32 * tokens * 4096 * 2 + tokens * (6 * 4096 + 3 * 11008) * 2
    assert terms["key-value cache at evaluation (bf16)"] == 2 * 32 * 4096 * 724 * 64 * 2
    # the base: each process's shards and what stays whole add up to the whole frozen model in bf16
    whole = predicted_bytes(model, keep, 1)
    assert terms["frozen base in shards (bf16)"] + terms["rest of the base, gathered for evaluation (bf16)"] \
        == whole["sharded"]
    assert whole["sharded"] + terms["frozen rest, whole (bf16)"] == 2 * base
    assert terms["frozen base in shards (bf16)"] <= whole["sharded"] / 8 + 2 * 4096 * 8 * 200  # padded rows


def test_the_peaks_add_their_terms(seven_b):
    model, keep = seven_b
    terms = memory_terms(model, keep, 8, COIN_WORKLOAD)
    found = peaks(terms)
    assert found["training peak"] == sum(terms.values()) - terms["rest of the base, gathered for evaluation (bf16)"] \
        - terms["key-value cache at evaluation (bf16)"]
    assert found["evaluation peak"] == (terms["frozen base in shards (bf16)"] + terms["frozen rest, whole (bf16)"]
                                        + terms["trained weights (fp32)"] + terms["AdamW's two moments (fp32)"]
                                        + terms["rest of the base, gathered for evaluation (bf16)"]
                                        + terms["key-value cache at evaluation (bf16)"])
