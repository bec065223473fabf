"""SAME's stabilised mixture of LoRA experts (Xie et al., ICML 2026; the code is Prism's,
LAMDA-CL/Prism ``PEFT/tuners/custom/same.py``, cited below by line).

One expert per task of the stream in every adapted layer (``expert_num = task_num``), each an A of
``expert_rank`` rows drawn from N(0, 0.01^2) and a B of zeros (lines 284-288), and a router (an
``nn.Linear`` without bias, default initialisation, lines 318-319). The experts' outputs are mixed
before and after the rank bottleneck, each weighted by the routing (``SAMELinearA``/``SAMELinearB``,
lines 836-864), so cross terms enter:

    h = W0 x + s * (sum_e w_e B_e) (sum_e w_e A_e) x,   s = alpha / r  (no dropout: the forward, lines
    338-374, never applies ``lora_dropout``).

Routing (lines 338-358): in training, one weight vector for the whole micro-batch, the mean over its
tokens of the per-token softmax of the router, times the adaptive-freezing masks and renormalised;
at evaluation, per sample, the mean over its tokens of the softmax of the logits divided by the expert
count, times the sample's task mixture from the guide encoder (``SameState.prior``, set by the method),
kept to its top two and renormalised (each decoding step routes by its own token, as the original's
batch-1 generation with a KV cache does).

The three mechanisms that stabilise it, each once per training micro-batch:
- covariance-aware routing: every 20th micro-batch of a task (from its first), a one-step randomized
  range finder of the covariance of the layer's input tokens gives a basis U and spreads S (lines
  618-658); the router's gradient is scaled within U's leading directions (those holding
  ``cumulative_energy_ratio`` of S's energy, in U's own column order) by the normalised inverse of S
  smoothed over a window, clamped to [0.8, 1.2], from the tenth micro-batch of a task (lines 456-502);
- curvature-aware gradient scaling: from the second task every expert's A gradient is preconditioned by
  the previous task's last basis: within its leading directions by 1 / (S + mu), elsewhere by 1 / mu
  (lines 504-588);
- adaptive expert freezing: exponential averages of each expert's mean routing weight (utilisation) and
  of its routing-weighted input energy (importance); an expert whose min-max normalised utilisation
  minus normalised importance falls below ``tau_score`` is masked out of the training routing (the
  current task's never), so it gets no gradient; once every other expert is masked the masks stay as
  they are for the task (lines 660-723).

What carries from task to task is what Prism's checkpoint carries (``_ROUTER_CARRY_BUFFER_MARKERS`` in
``method/custom/specialized_integration.py``, lines 22-27): the previous task's basis and importance.
Utilisation, masks, the running basis and the step count start afresh with each task, as in Prism,
where each task is a new process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

ROUTER_HOOK_START = 10  # start_step (line 328): the router's gradient is left alone before this micro-batch
COVARIANCE_EVERY = 20  # line 632: the basis is recomputed on every 20th micro-batch
ROUTER_SCALING_BOUND = 0.2  # router_scaling_factor (line 331): the router's scaling stays within 1 -/+ 0.2
EVALUATION_TOP_K = 2  # _apply_topk_sparsification's k (line 357)
UTILISATION_DECAY = 0.95  # lines 666, 673


@dataclass(frozen=True)
class Stabilisers:
    """SAME's knobs (``config/methods/same.py``'s METHOD_CONFIG)."""

    max_components: int = 64  # columns of the randomized basis
    cumulative_energy_ratio: float = 0.9  # the energy share of a basis's leading directions
    window_size: int = 3  # the router scaling's smoothing window
    curvature_mu: float = 0.9
    tau_score: float = 0.1  # the freezing threshold (METHOD_CONFIG_BY_BACKBONE: LLaVA's and InternVL's)


class SameState:
    """What every SAME layer of one model reads: the task being trained, the micro-batch count within it
    (Prism's ``current_step``), and which tokens of the batch count (not padding)."""

    def __init__(self) -> None:
        self.task = 0
        self.step = 0  # micro-batches of the current task so far, the current one included
        self.token_mask: torch.Tensor | None = None  # [samples, tokens], True on tokens that count
        # at evaluation, [samples, experts]: each sample's task mixture from the guide, which weighs the
        # experts before the top two are kept (Prism's ``layer.router``); None: every expert alike
        self.prior: torch.Tensor | None = None


def energy_rank(spreads: torch.Tensor, ratio: float) -> int:
    """How many leading directions a basis keeps: those whose cumulative energy share (S^2, in the basis's
    own order) is at most ``ratio``, plus one, at most all of them (lines 472-478, 527-534)."""
    energy = spreads.double() ** 2
    share = energy.cumsum(0) / energy.sum()
    return max(1, min(int((share <= ratio).sum()) + 1, len(spreads)))


def window_smoothed(values: torch.Tensor, window: int) -> torch.Tensor:
    """Each value replaced by the mean of it and the ``window - 1`` before it (fewer at the start; lines
    486-489)."""
    sums = torch.cat([values.new_zeros(1), values.cumsum(0)])
    end = torch.arange(1, len(values) + 1, device=values.device)
    start = (end - window).clamp_min(0)
    return (sums[end] - sums[start]) / (end - start).to(values.dtype)


def router_gradient(grad: torch.Tensor, basis: torch.Tensor, spreads: torch.Tensor, ratio: float,
                    window: int) -> torch.Tensor:
    """The router's gradient [experts, d_in] scaled within the basis's leading directions (lines 456-502):
    by 1 / (smoothed S + 1e-6), normalised by its largest value and clamped to [0.8, 1.2]."""
    k = energy_rank(spreads, ratio)
    directions = basis[:, :k].to(grad.dtype)
    scaling = 1.0 / (window_smoothed(spreads[:k].to(grad.dtype), window) + 1e-6)
    scaling = (scaling / scaling.max()).clamp(1 - ROUTER_SCALING_BOUND, 1 + ROUTER_SCALING_BOUND)
    along = grad @ directions
    return grad + (along * (scaling - 1)) @ directions.T


def curvature_gradient(grad: torch.Tensor, basis: torch.Tensor, spreads: torch.Tensor, ratio: float,
                       mu: float) -> torch.Tensor:
    """An A gradient [rows, d_in] preconditioned by the previous task's basis (lines 523-576): its part in
    the leading directions scaled by 1 / (S + mu), the rest by 1 / mu."""
    k = energy_rank(spreads, ratio)
    directions = basis[:, :k].to(grad.dtype)
    along = grad @ directions
    return (along / (spreads[:k].to(grad.dtype) + mu)) @ directions.T + (grad - along @ directions.T) / mu


def randomized_basis(rows: torch.Tensor, components: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A basis [d, k] and spreads [k] of the centred rows' covariance from one random projection: Q
    Gaussian, U from the QR of X^T X Q, S the standard deviation of X along each column of U (lines
    633-653). The columns are in the QR's order, not sorted by S."""
    x = rows.float()
    centred = x - x.mean(dim=0, keepdim=True)
    probe = torch.randn(x.shape[1], min(components, x.shape[1]), device=x.device)
    basis, _ = torch.linalg.qr(centred.T @ (centred @ probe), mode="reduced")
    spreads = torch.sqrt((centred @ basis).pow(2).sum(dim=0) / (x.shape[0] - 1 + 1e-8))
    return basis, spreads


def min_max(values: torch.Tensor) -> torch.Tensor:
    """Scaled to [0, 1] by its range; all zeros when constant (line 699-703)."""
    if values.max() == values.min():
        return torch.zeros_like(values)
    return (values - values.min()) / (values.max() - values.min() + 1e-8)


def freezing_masks(utilisation: torch.Tensor, importance: torch.Tensor, current: int,
                   tau: float) -> tuple[torch.Tensor, bool]:
    """Which experts stay in the training routing (1) and whether every other expert is out (lines
    676-707): an expert whose normalised utilisation minus normalised importance is below ``tau`` goes
    out, except the current task's."""
    low = min_max(utilisation) - min_max(importance) < tau
    low[current] = False
    masks = (~low).to(utilisation.dtype)
    others = torch.ones_like(low)
    others[current] = False
    return masks, bool(low[others].all())


def masked_routing(mean: torch.Tensor, masks: torch.Tensor, current: int) -> torch.Tensor:
    """The batch's mean routing with the masked experts removed and renormalised; all of it on the current
    task's expert when nothing is left (lines 709-723)."""
    kept = mean * masks.to(mean.dtype)
    if kept.sum() == 0:
        kept = torch.zeros_like(kept)
        kept[current] = 1.0
    return kept / kept.sum()


def top_two(mean: torch.Tensor) -> torch.Tensor:
    """Per row, the two largest routing weights renormalised, the rest zero (lines 592-603, with the
    original's 1e-8 guards; the prior is already multiplied in)."""
    probs = mean / (mean.sum(dim=-1, keepdim=True) + 1e-8)
    if probs.shape[-1] <= EVALUATION_TOP_K:
        return probs
    values, indices = probs.topk(EVALUATION_TOP_K, dim=-1)
    kept = torch.zeros_like(probs).scatter(-1, indices, values)
    return kept / (kept.sum(dim=-1, keepdim=True) + 1e-8)


class StabilisedExperts(nn.Module):
    def __init__(self, d_in: int, d_out: int, experts: int, expert_rank: int, scale: float, state: SameState,
                 knobs: Stabilisers) -> None:
        super().__init__()
        self.d_in, self.d_out, self.experts, self.expert_rank = d_in, d_out, experts, expert_rank
        self.scale, self.state, self.knobs = scale, state, knobs
        rank = experts * expert_rank
        self.lora_A = nn.Parameter(torch.randn(rank, d_in) * 0.01)  # expert e: rows e*r_e .. (e+1)*r_e
        self.lora_B = nn.Parameter(torch.zeros(d_out, rank))  # expert e: columns e*r_e .. (e+1)*r_e
        self.router = nn.Parameter(torch.empty(experts, d_in))
        nn.init.kaiming_uniform_(self.router, a=math.sqrt(5))
        k = min(knobs.max_components, d_in)
        for name, shape in (("basis", (d_in, k)), ("prev_basis", (d_in, k))):
            self.register_buffer(name, torch.zeros(shape), persistent=False)
        for name in ("spreads", "prev_spreads"):
            self.register_buffer(name, torch.zeros(k), persistent=False)
        self.register_buffer("utilisation", torch.full((experts,), 1.0 / experts), persistent=False)
        self.register_buffer("importance", torch.full((experts,), 1.0 / experts), persistent=False)
        self.register_buffer("masks", torch.ones(experts), persistent=False)
        self.prev_valid = False
        self.all_frozen = False
        self.counted_step = -1  # the micro-batch whose statistics were taken (recomputation runs forward again)
        self.router.register_hook(self._router_hook)
        self.lora_A.register_hook(self._curvature_hook)

    # ------------------------------------------------------------------ tasks
    def start_task(self) -> None:
        """What Prism's fresh process for a new task starts without (everything but the carried buffers)."""
        self.utilisation.fill_(1.0 / self.experts)
        self.masks.fill_(1.0)
        self.basis.zero_()
        self.spreads.zero_()
        self.all_frozen = False
        self.counted_step = -1

    @torch.no_grad()
    def snapshot(self) -> None:
        """The task's last basis becomes the previous one (``save_task_covariance_snapshot``, lines 725-739):
        its first k columns, k the count of spreads above 1e-10."""
        k = int((self.spreads > 1e-10).sum())
        self.prev_valid = k > 0
        if k:
            self.prev_basis.zero_()
            self.prev_spreads.zero_()
            self.prev_basis[:, :k] = self.basis[:, :k]
            self.prev_spreads[:k] = self.spreads[:k]

    # ------------------------------------------------------------------ gradients
    def _router_hook(self, grad: torch.Tensor) -> torch.Tensor:
        if not self.training or self.state.step < ROUTER_HOOK_START or not bool(self.spreads.any()):
            return grad
        return router_gradient(grad.float(), self.basis, self.spreads, self.knobs.cumulative_energy_ratio,
                               self.knobs.window_size).to(grad.dtype)

    def _curvature_hook(self, grad: torch.Tensor) -> torch.Tensor:
        if not self.training or self.state.task == 0 or not self.prev_valid:
            return grad
        return curvature_gradient(grad.float(), self.prev_basis, self.prev_spreads,
                                  self.knobs.cumulative_energy_ratio, self.knobs.curvature_mu).to(grad.dtype)

    # ------------------------------------------------------------------ forward
    def counted_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """[samples, tokens] True on the tokens that count: the batch's mask on a full pass, the one token of
        a decoding step."""
        mask = self.state.token_mask
        if mask is not None and tuple(mask.shape) == tuple(x.shape[:2]):
            return mask.to(x.device)
        if x.shape[1] == 1:
            return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        raise RuntimeError(f"a SAME layer sees {tuple(x.shape[:2])} (samples, tokens) but its token mask is "
                           f"{None if mask is None else tuple(mask.shape)}; the method sets it for each batch")

    def routing(self, x: torch.Tensor) -> torch.Tensor:
        """[samples or 1, experts]: the micro-batch's one vector in training, each sample's at evaluation."""
        counted = self.counted_tokens(x)
        logits = x @ self.router.T.to(x.dtype)
        if self.training:
            gates = torch.softmax(logits[counted], dim=-1)  # [counted tokens, experts]
            weights = masked_routing(gates.mean(dim=0), self.masks.clone(), self.current)  # masks change below
            if self.counted_step != self.state.step:
                self.counted_step = self.state.step
                self.take_statistics(x[counted].detach(), gates.detach())
            return weights.unsqueeze(0)
        gates = torch.softmax(logits / self.experts, dim=-1)
        share = counted.to(gates.dtype)
        mean = torch.einsum("bte,bt->be", gates, share / share.sum(dim=1, keepdim=True))
        if self.state.prior is not None:
            mean = mean * self.state.prior.to(mean.device, mean.dtype)
        return top_two(mean)

    @property
    def current(self) -> int:
        return min(self.state.task, self.experts - 1)

    @torch.no_grad()
    def take_statistics(self, rows: torch.Tensor, gates: torch.Tensor) -> None:
        if (self.state.step - 1) % COVARIANCE_EVERY == 0:
            basis, spreads = randomized_basis(rows, self.basis.shape[1])
            self.basis.copy_(basis)
            self.spreads.copy_(spreads)
        decay = UTILISATION_DECAY
        self.utilisation.mul_(decay).add_((1 - decay) * gates.float().mean(dim=0))
        energy = rows.float().pow(2).sum(dim=1, keepdim=True)
        self.importance.mul_(decay).add_((1 - decay) * (gates.float() * energy).mean(dim=0))
        if not self.all_frozen:
            masks, self.all_frozen = freezing_masks(self.utilisation, self.importance, self.current,
                                                             self.knobs.tau_score)
            self.masks.copy_(masks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3:
            raise RuntimeError(f"a SAME layer expects [samples, tokens, features] inputs, not {tuple(x.shape)}")
        weights = self.routing(x).to(x.dtype)  # [samples or 1, experts]
        down = torch.einsum("be,erd->brd", weights, self.lora_A.to(x.dtype).view(self.experts, self.expert_rank, -1))
        up = torch.einsum("be,oer->bor", weights,
                          self.lora_B.to(x.dtype).view(self.d_out, self.experts, self.expert_rank))
        hidden = torch.einsum("btd,brd->btr", x, down.expand(x.shape[0], -1, -1))
        return torch.einsum("btr,bor->bto", hidden, up.expand(x.shape[0], -1, -1)) * self.scale
