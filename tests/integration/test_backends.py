"""The other backends end to end on CPU: tiny random Qwen2-VL, Qwen2.5-VL and InternVL models built
locally from their configs, every registered method on the quick two-task slice of synth-coin through the CLI."""

import json

import pytest
from typer.testing import CliRunner

from mcit_bench.cli import app
from mcit_bench.methods.registry import METHODS
from tests.conftest import FIXTURES, quick_option_args

pytestmark = pytest.mark.slow

SELECTING = {name for name in METHODS.names() if METHODS.get(name).capabilities.selects_task}
# llava-1.5 and qwen2-vl-448 at real image sizes: 576 image tokens (LLaVA-1.5's 336-pixel CLIP) and
# 256 (Qwen2-VL at 448 x 448 pixels), so real sequence lengths meet the sequence limit and truncation.
# Qwen2-VL runs at that size alone: the same architecture at a smaller image takes no other path.
BACKENDS = ("qwen2.5-vl", "internvl", "llava-1.5", "qwen2-vl-448")
IMAGE_TOKENS = {"llava-1.5": 576, "qwen2-vl-448": 256}


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    from mcit_bench.models.tiny_archs import build_tiny_internvl, build_tiny_llava15, build_tiny_qwen2_vl, save_tiny

    builders = {"qwen2.5-vl": lambda: build_tiny_qwen2_vl(0, "2.5"),
                "internvl": lambda: build_tiny_internvl(0), "llava-1.5": lambda: build_tiny_llava15(0),
                "qwen2-vl-448": lambda: build_tiny_qwen2_vl(0, "2", image_side=448)}
    return {name: save_tiny(*build(), tmp_path_factory.mktemp(name)) for name, build in builders.items()}


def lora_count(config, rank: int = 16) -> int:
    """seqft's LoRA by hand: rank * (d_in + d_out) for the 7 linear layers of each decoder layer."""
    text = config["text_config"]
    hidden, inter = text["hidden_size"], text["intermediate_size"]
    kv = text["num_key_value_heads"] * hidden // text["num_attention_heads"]
    shapes = [(hidden, hidden), (hidden, kv), (hidden, kv), (hidden, hidden),
              (hidden, inter), (hidden, inter), (inter, hidden)]
    return text["num_hidden_layers"] * sum(rank * (d_in + d_out) for d_in, d_out in shapes)


def image_width(config, backend: str) -> int:
    """The vision encoder's own feature width (Qwen2-VL calls it embed_dim)."""
    return config["vision_config"]["embed_dim" if backend.startswith("qwen2-vl") else "hidden_size"]


def projector_count(config, backend: str) -> int:
    """The projector by hand. Qwen: a norm over the encoder width, then (4 x width) -> (4 x width) -> LM
    width on each 2 x 2 patch group. InternVL: a LayerNorm over the pixel-shuffled (4 x width) features,
    then -> LM width -> LM width."""
    width, text = image_width(config, backend), config["text_config"]["hidden_size"]
    if backend == "llava-1.5":  # two linear layers with a GELU between
        return width * text + text + text * text + text
    merged = 4 * width
    if backend == "internvl":
        return 2 * merged + merged * text + text + text * text + text
    norm = 2 * width if backend.startswith("qwen2-vl") else width  # LayerNorm (weight, bias) or RMSNorm (weight)
    return norm + merged * merged + merged + merged * text + text


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", METHODS.names())
def test_every_method_runs_on_a_tiny_model_of_each_backend(tmp_path, cache_root, tiny_dirs, backend, method):
    model_dir = tiny_dirs[backend]
    result = CliRunner().invoke(app, [
        "run", "--method", method, "--sequence", str(FIXTURES / "two_task_quick.yaml"), "--model", str(model_dir),
        "--steps-per-task", "2", "--batch-size", "4", "--output", str(tmp_path / "runs"),
        "--cache-dir", str(cache_root), *quick_option_args(method)])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "runs" / "two-task-quick" / method / "seed0" / "results.json").read_text())
    assert results["tasks"] == ["imagenet", "textvqa"]
    assert len(results["matrix"]) == 3 and all(len(row) == 2 for row in results["matrix"])
    last = results["stages"][-1]
    assert set(last["task_selection"]) == ({"imagenet", "textvqa"} if method in SELECTING else set())
    config = json.loads((model_dir / "config.json").read_text())
    if method == "seqft":  # LoRA on the language model plus the whole projector
        assert last["trainable_params"] == lora_count(config) + projector_count(config, backend)
        assert results["cost"]["added_params"] == lora_count(config)
    if method == "expansion":  # one projector copy per task plus its image and text keys
        keys = image_width(config, backend) + config["text_config"]["hidden_size"]
        assert last["trainable_params"] == projector_count(config, backend) + keys
    if backend in IMAGE_TOKENS:  # a sample of the stream reaches the model with its image's placeholders whole
        assert image_tokens(model_dir) == IMAGE_TOKENS[backend]


def image_tokens(model_dir) -> int:
    """The image placeholders of a 64-pixel synth-coin image's training sample, as the saved model's
    own processor expands them."""
    from PIL import Image

    from mcit_bench.models.collate import InstructionCollator
    from mcit_bench.models.loading import load_named_processor, model_config, sequence_limit

    config, processor = model_config(str(model_dir)), load_named_processor(str(model_dir))
    collator = InstructionCollator(processor, sequence_limit("tiny", config, processor.tokenizer))
    batch = collator.train_batch([{"image": Image.new("RGB", (64, 64)), "instruction": "what is it?", "target": "x"}])
    return int((batch["input_ids"] == config.image_token_id).sum())


TEXT_ONLY = FIXTURES / "text_only_quick.yaml"


def run_text_only(tmp_path, cache_root, method: str, model: str) -> dict:
    """The text-only stream: batches mix a question without an image with image ones, in training,
    in generation and in the selectors' routing."""
    result = CliRunner().invoke(app, [
        "run", "--method", method, "--sequence", str(TEXT_ONLY), "--data-root", str(FIXTURES / "published" / "coin"),
        "--model", model, "--batch-size", "4", "--output", str(tmp_path / "runs"), "--cache-dir", str(cache_root),
        *quick_option_args(method),
        # a published-format stream: a guided method must be given its guide (the embedded one here)
        *(["--guide-encoder", "mcit-tiny-guide"] if METHODS.get(method).capabilities.needs_guide else [])])
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "text-only-quick" / method / "seed0"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["tasks"] == ["sqa", "imagenet"] and results["task_info"]["sqa"]["test_samples"] == 2
    last = len(results["stages"])  # joint trains both tasks in one stage
    lines = (run_dir / f"predictions/stage{last}/sqa.jsonl").read_text().splitlines()
    predictions = [json.loads(line) for line in lines]
    assert [p["question_id"] for p in predictions] == ["5", "6"]  # "6" has no image
    if method in SELECTING:  # the text-only question was routed too
        assert set(results["stages"][-1]["task_selection"]) == {"sqa", "imagenet"}
    return results


@pytest.mark.parametrize("method", METHODS.names())
def test_every_method_runs_text_only_samples_on_mcit_tiny(tmp_path, cache_root, method):
    run_text_only(tmp_path, cache_root, method, "mcit-tiny")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", ["seqft", "expansion", "branchlora", "dmole"])
def test_text_only_samples_on_each_backend(tmp_path, cache_root, tiny_dirs, backend, method):
    run_text_only(tmp_path, cache_root, method, str(tiny_dirs[backend]))
