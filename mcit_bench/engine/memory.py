"""What one process holds while a run trains and evaluates: every term of docs/DISTRIBUTED.md's table.

The weights' terms come from the model itself (:func:`mcit_bench.engine.sharding.predicted_bytes`: the
frozen base in shards and whole); the rest from the language model's shapes and the workload. It is
an estimate of the largest tensors alive at once, not an allocator trace: what the table leaves out
(the vision tower's activations, allocator slack, CUDA's context) is named there.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from mcit_bench.engine.sharding import predicted_bytes

FLOAT32, BFLOAT16 = 4, 2


@dataclass(frozen=True)
class Workload:
    """One process's share of a step: ``micro_batch`` samples of ``sequence`` tokens in training, and
    ``eval_batch`` prompts growing to ``eval_tokens`` tokens in generation."""

    micro_batch: int
    sequence: int
    eval_batch: int
    eval_tokens: int
    gradient_checkpointing: bool = True


def memory_terms(model: nn.Module, keep: set[nn.Parameter], processes: int, workload: Workload) -> dict[str, int]:
    """Bytes per process, term by term, for ``model`` (built on the meta device in the precision it
    runs in) whose parameters ``keep`` train, sharded over ``processes`` (1: unsharded).

    What trains keeps float32 master weights, their gradients, AdamW's two moments, the flat buffer
    its gradients are reduced in over processes, and the bfloat16 copies autocast makes of them. The
    language model head's logits are computed in bfloat16 and upcast to float32 for the loss. With
    gradient checkpointing each decoder layer keeps its input and one layer's tensors live again in
    backward; without it every layer keeps those tensors. Generation keeps a key and a value per
    layer, key-value head and token of the evaluation batch.
    """
    weights = predicted_bytes(model, keep, processes)
    whole_base = predicted_bytes(model, keep, 1)["sharded"]
    kept_bytes = sum(p.numel() * p.element_size() for p in keep)
    trainable = sum(p.numel() for p in keep)
    text = model.config.get_text_config()
    hidden, layers, vocab = text.hidden_size, text.num_hidden_layers, text.vocab_size
    head_dim = getattr(text, "head_dim", None) or hidden // text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    tokens = workload.micro_batch * workload.sequence
    # a Llama-style layer's tensors kept for backward: the two norms' outputs, q, k, v and the
    # attention output (hidden wide), gate, up and their product (intermediate wide)
    one_layer = tokens * (6 * hidden + 3 * text.intermediate_size) * BFLOAT16
    checkpoints = layers * tokens * hidden * BFLOAT16
    activations = checkpoints + one_layer if workload.gradient_checkpointing else layers * one_layer
    return {
        "frozen base in shards (bf16)": weights["sharded"],
        "frozen rest, whole (bf16)": weights["replicated"] - kept_bytes,
        "trained weights (fp32)": trainable * FLOAT32,
        "their gradients (fp32)": trainable * FLOAT32,
        "AdamW's two moments (fp32)": 2 * trainable * FLOAT32,
        "flat gradient buffer (fp32)": trainable * FLOAT32 if processes > 1 else 0,
        "autocast copies of the trained weights (bf16)": trainable * BFLOAT16,
        "activations (bf16)": activations,
        "logits (bf16, and fp32 for the loss)": tokens * vocab * (BFLOAT16 + FLOAT32),
        "rest of the base, gathered for evaluation (bf16)": whole_base - weights["sharded"],
        "key-value cache at evaluation (bf16)": (2 * layers * kv_heads * head_dim * workload.eval_tokens
                                                 * workload.eval_batch * BFLOAT16),
    }


EVALUATION_ONLY = ("rest of the base, gathered for evaluation (bf16)", "key-value cache at evaluation (bf16)")
# what training frees before an evaluation (AdamW's moments stay with the optimizer)
FREED_FOR_EVALUATION = ("their gradients (fp32)", "flat gradient buffer (fp32)",
                        "autocast copies of the trained weights (bf16)", "activations (bf16)",
                        "logits (bf16, and fp32 for the loss)")


def peaks(terms: dict[str, int]) -> dict[str, int]:
    """The training peak (no evaluation terms) and the evaluation peak (weights, the optimizer's
    moments, the gathered base and the cache)."""
    training = sum(value for name, value in terms.items() if name not in EVALUATION_ONLY)
    evaluation = sum(value for name, value in terms.items() if name not in FREED_FOR_EVALUATION)
    return {"training peak": training, "evaluation peak": evaluation}


# CoIN's workload per GPU: 16 samples a step (scripts/CoIN/Train/2_TextVQA.sh:30) of about 700 tokens
# (576 image tokens, the instruction and a short answer), LoRA rank 128 (line 14) with the projector;
# evaluation at this harness's default batch of 64 prompts, 24 new tokens each
COIN_WORKLOAD = Workload(micro_batch=16, sequence=700, eval_batch=64, eval_tokens=700 + 24)
COIN_LORA_RANK = 128


def seqft_on_meta(size: str, rank: int = COIN_LORA_RANK) -> tuple[nn.Module, set[nn.Parameter]]:
    """LLaVA-1.5 on the meta device with seqft's trainable set: LoRA of ``rank`` on every linear layer
    of the language model, and the projector."""
    from mcit_bench.adapters.lora import inject_lora, unfreeze_projector

    model = llava15_on_meta(size)
    base = {id(p) for p in model.parameters()}
    model = inject_lora(model, rank, 2.0 * rank, 0.0)
    unfreeze_projector(model)
    return model, {p for p in model.parameters() if id(p) not in base or p.requires_grad}


def memory_table(workload: Workload = COIN_WORKLOAD, processes: tuple[int, ...] = (1, 8)) -> str:
    """docs/DISTRIBUTED.md's table: seqft on LLaVA-1.5-7B and -13B, every term in GB, per process."""
    columns: list[tuple[str, dict[str, int]]] = []
    for size in ("7b", "13b"):
        model, keep = seqft_on_meta(size)
        for count in processes:
            terms = memory_terms(model, keep, count, workload)
            columns.append((f"{size.upper()}, {count} GPU{'s' if count > 1 else ''}", {**terms, **peaks(terms)}))
    header = "| term | " + " | ".join(name for name, _ in columns) + " |"
    lines = [header, "|---|" + "---:|" * len(columns)]
    for term in columns[0][1]:
        bold = term.endswith("peak")
        cells = [f"**{values[term] / 1e9:.2f}**" if bold else f"{values[term] / 1e9:.2f}" for _, values in columns]
        lines.append(f"| {'**' + term + '**' if bold else term} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# LLaVA-1.5 as llava-hf publishes it (config.json of llava-hf/llava-1.5-7b-hf and -13b-hf): Vicuna
# v1.5 language models, a CLIP ViT-L/14 at 336 pixels, the second-to-last layer's features
LLAVA15_TEXT = {"7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32),
                "13b": dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40)}


def llava15_on_meta(size: str) -> nn.Module:
    """LLaVA-1.5-7B or -13B with every weight on the meta device, in bfloat16: shapes, no memory."""
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    text = LlamaConfig(vocab_size=32064, max_position_embeddings=4096, rms_norm_eps=1e-5,
                       tie_word_embeddings=False, **LLAVA15_TEXT[size])
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=336, patch_size=14, projection_dim=768)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=32000, image_seq_length=576,
                         vision_feature_select_strategy="default", vision_feature_layer=-2,
                         projector_hidden_act="gelu")
    with torch.device("meta"):
        return LlavaForConditionalGeneration(config).to(torch.bfloat16)
