"""Task selection without labels: per-task image and instruction keys (expansion, BranchLoRA).

Each sample gives two queries from frozen parts of the model: the vision tower's class-token
feature of its image (the mean patch feature for towers without one) and the mean input embedding
of its instruction tokens. Each trained task owns an image key and a text key, pulled towards its
samples' queries by a (1 - cos) loss while the task trains. At evaluation a sample goes to the task
whose keys are the most similar (summed cosine), one choice per sample, so a batch of mixed tasks stays one batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from mcit_bench.core.records import IGNORE_INDEX
from mcit_bench.methods.distributed import mean_over_processes
from mcit_bench.methods.sample_values import SampleValues
from mcit_bench.models.anatomy import pooled_image_features


def instruction_mask(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The instruction's tokens: not padding, not image placeholders, not the answer of a training batch."""
    mask = batch["attention_mask"].bool() & (batch["input_ids"] != model.config.image_token_id)
    if "labels" in batch:
        mask &= batch["labels"] == IGNORE_INDEX
    return mask


@torch.no_grad()
def sample_queries(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(image query, instruction query) per sample, from the frozen vision tower and input embeddings."""
    image_query, _ = pooled_image_features(model, batch)
    embeddings = model.get_input_embeddings()(batch["input_ids"])
    weights = instruction_mask(model, batch).unsqueeze(-1).to(embeddings.dtype)
    text_query = (embeddings * weights).sum(1) / weights.sum(1).clamp_min(1.0)
    return image_query.float(), text_query.float()


class KeySelector(nn.Module):
    """One image key and one text key per task; the task of a sample is the best-matching pair."""

    def __init__(self, image_dim: int, text_dim: int) -> None:
        super().__init__()
        self.image_dim, self.text_dim = image_dim, text_dim
        self.image_keys = nn.ParameterList()
        self.text_keys = nn.ParameterList()
        self.known_queries = SampleValues()  # the queries read frozen weights only: one pass per sample

    def queries(self, model: nn.Module, batch: dict[str, torch.Tensor], samples: list[dict[str, Any]] | None,
                training: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`sample_queries` of the batch, each sample's computed once (``samples``: its rows); in
        training every process computes when any has a new sample (``SampleValues.of``'s ``together``)."""
        image, text = self.known_queries.of(samples, lambda: sample_queries(model, batch), together=training)
        return image, text

    @property
    def n_tasks(self) -> int:
        return len(self.image_keys)

    def add_task(self, device: torch.device) -> None:
        """A new pair of keys, placed on the first training batch's mean query (see ``key_loss``)."""
        self.image_keys.append(nn.Parameter(torch.zeros(self.image_dim, device=device)))
        self.text_keys.append(nn.Parameter(torch.zeros(self.text_dim, device=device)))

    def key_loss(self, queries: tuple[torch.Tensor, torch.Tensor], task: int) -> torch.Tensor:
        image_query, text_query = queries
        image_key, text_key = self.image_keys[task], self.text_keys[task]
        # zero-initialised: start from the data instead of at random, from the mean of the whole
        # global batch, so every process (and one process alone) starts from the same point
        if not image_key.detach().any():
            with torch.no_grad():
                image_key.copy_(mean_over_processes(image_query))
                text_key.copy_(mean_over_processes(text_query))
        return ((1 - F.cosine_similarity(image_query, image_key.unsqueeze(0), dim=-1)).mean()
                + (1 - F.cosine_similarity(text_query, text_key.unsqueeze(0), dim=-1)).mean())

    def choose(self, model: nn.Module, batch: dict[str, torch.Tensor],
               samples: list[dict[str, Any]] | None) -> torch.Tensor:
        """Per sample of an evaluation batch, the task whose keys match its queries best."""
        return self.select(self.queries(model, batch, samples, training=False))

    @torch.no_grad()
    def select(self, queries: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Per sample, the index of the trained task whose keys match best."""
        image_query, text_query = queries
        image_keys = torch.stack(list(self.image_keys))
        text_keys = torch.stack(list(self.text_keys))
        score = (F.cosine_similarity(image_query.unsqueeze(1), image_keys.unsqueeze(0), dim=-1)
                 + F.cosine_similarity(text_query.unsqueeze(1), text_keys.unsqueeze(0), dim=-1))
        return score.argmax(dim=1)
