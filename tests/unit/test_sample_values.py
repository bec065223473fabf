"""Values of a sample computed once (mcit_bench.methods.sample_values): read back in any batch, computed
again only for a batch holding a new sample, and a sample's first values kept."""

import torch

from mcit_bench.methods.sample_values import SampleValues


def rows(*names: str) -> list[dict]:
    return [{"image": f"{name}.png", "instruction": f"what is {name}?"} for name in names]


def test_a_sample_is_computed_once_and_read_back_in_any_batch():
    cache, calls = SampleValues(), []

    def compute(batch: list[dict], offset: float):
        def run():
            calls.append(len(batch))
            first = torch.tensor([[float(len(row["image"])) + offset] for row in batch])
            return first, first * 10
        return run

    a, b = cache.of(rows("ab", "abc"), compute(rows("ab", "abc"), 0.0))
    assert a.tolist() == [[6.0], [7.0]] and b.tolist() == [[60.0], [70.0]]
    # a batch with one new sample: computed, and the known sample keeps its first values (not 100 + ...)
    a, b = cache.of(rows("abc", "abcd"), compute(rows("abc", "abcd"), 100.0))
    assert a.tolist() == [[7.0], [108.0]] and b.tolist() == [[70.0], [1080.0]]
    a, _ = cache.of(rows("abcd", "ab", "abc"), compute(rows("abcd", "ab", "abc"), 200.0))
    assert a.tolist() == [[108.0], [6.0], [7.0]] and calls == [2, 2]
    # the same image with another instruction is another sample
    other = [{"image": "ab.png", "instruction": "why?"}]
    assert cache.of(other, compute(other, 300.0))[0].tolist() == [[306.0]] and calls == [2, 2, 1]


def test_without_rows_the_values_are_computed_and_not_kept():
    cache = SampleValues()
    assert cache.of(None, lambda: (torch.ones(2, 1),))[0].tolist() == [[1.0], [1.0]]
    assert cache.values == {}
