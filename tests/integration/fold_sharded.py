"""Run by torchrun with two processes (tests/integration/test_fsdp.py): a LoRA block folded into a
row-sharded weight lands in each process's rows as it would in the whole weight.

    torchrun --nproc_per_node 2 fold_sharded.py OUT.json
"""

import json
import sys

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from mcit_bench.adapters.experts import TaskBlocksLoRA, attach_adapters


def main() -> None:
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5, bias=False))
    model.requires_grad_(False)
    whole = model[0].weight.detach().clone()
    layer = attach_adapters(model, ["0"],
                            lambda name, linear: TaskBlocksLoRA(6, 5, rank=2, alpha=3.0, dropout=0.0))["0"]
    layer.add_block(torch.Generator().manual_seed(1), torch.device("cpu"))
    with torch.no_grad():
        layer.lora_B[0].copy_(torch.arange(10.0).view(5, 2) / 10)
    fully_shard(model[0], mesh=init_device_mesh("cpu", (2,)), ignored_params=set(layer.parameters()))
    local_rows = model[0].weight.to_local().shape[0]
    layer.fold_into(model[0].weight)
    folded = model[0].weight.full_tensor()
    expected = whole + 1.5 * layer.lora_B[0].detach() @ layer.lora_A[0].detach()
    if dist.get_rank() == 0:
        with open(sys.argv[1], "w") as out:
            json.dump({"local_rows": local_rows, "max_error": float((folded - expected).abs().max()),
                       "moved": float((folded - whole).abs().max())}, out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
