"""How strongly EWC's penalty pulls against the task's own loss, per lambda, on synth-coin's first two tasks.

    python benchmarks/ewc_penalty_scale.py --lambdas 1e2,1e3,1e4 [--every 10] [--subset ci]
        [--lora-rank 32 --lr 5.8e-4]

For each lambda, one fresh run of ``ewc`` through stage 2 (textvqa after sqa). At every ``every``-th
step of stage 2 it measures, on the same batch, the norm of the penalty's gradient and of the NLL's
gradient over the trainable parameters, and prints the ratio's median, quartiles and last value.
A lambda whose ratio stays far below 1 leaves EWC as seqft; far above 1, the penalty owns every
clipped step and the new task is not learnt. The choice reads no test score: only these gradients.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
from mcit_bench.baselines.ewc import EWC

from mcit_bench.config import RunConfig
from mcit_bench.engine.run import run_stream


def gradient_norm(value: torch.Tensor, params: list[torch.nn.Parameter]) -> float:
    grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
    return float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None)))


def ratios_for(ewc_lambda: float, every: int, subset: str | None, output: Path, cache_root: Path | None = None,
               lora_rank: int | None = None, lr: float | None = None) -> list[float]:
    """The penalty-to-NLL gradient-norm ratios on every ``every``-th batch of stage 2, at EWC's
    default rank and learning rate unless given (a tuning study's choice)."""
    ratios: list[float] = []
    calls = {"n": 0}
    original = EWC.loss

    def measured_loss(self, batch, outputs, run):
        terms = original(self, batch, outputs, run)
        if terms:  # stage 2 onwards: the penalty exists
            calls["n"] += 1
            if calls["n"] % every == 1 or every == 1:
                params = list(self.trainable().values())
                penalty, nll = gradient_norm(terms["ewc"], params), gradient_norm(outputs.loss, params)
                ratios.append(penalty / max(nll, 1e-12))
        return terms

    EWC.loss = measured_loss
    try:
        options = {"ewc_lambda": ewc_lambda} | ({"lora_rank": lora_rank} if lora_rank is not None else {})
        config = RunConfig(method="ewc", method_options=options, seed=0, subset=subset)
        if lr is not None:
            config = config.model_copy(update={"training": config.training.model_copy(update={"lr": lr})})
        run_stream(config, output, run_id=f"lambda{ewc_lambda:g}", stop_after_stage=2, cache_root=cache_root)
    finally:
        EWC.loss = original
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lambdas", default="1e2,1e3,1e4")
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--subset", default=None)
    parser.add_argument("--lora-rank", type=int, default=None, help="EWC's default unless given")
    parser.add_argument("--lr", type=float, default=None, help="the training default unless given")
    args = parser.parse_args()
    print("lambda      steps  median ratio  quartiles          last")
    with tempfile.TemporaryDirectory() as folder:
        for ewc_lambda in (float(value) for value in args.lambdas.split(",")):
            ratios = ratios_for(ewc_lambda, args.every, args.subset, Path(folder), lora_rank=args.lora_rank,
                                lr=args.lr)
            quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
            print(f"{ewc_lambda:<10g}  {len(ratios):5d}  {statistics.median(ratios):12.3g}  "
                  f"{quartiles[0]:.3g} - {quartiles[2]:.3g}  {ratios[-1]:12.3g}", flush=True)


if __name__ == "__main__":
    main()
