"""Distributed runs on torch.distributed + torchrun: data-parallel training and QAT (DDP), sharded eval/parity.

- `config`: DistributedConfig (validated --nproc and friends) and the torchrun environment, without torch.
- `runtime`: the worker side: Dist (rank, world size, collectives, DDP wrapping, batch sharding), current().
- `launch`: the launching side of `vtool CMD --nproc N`: torchrun's elastic agent, one-line failures.

Two ways in, one code path: `vtool train --nproc 2 ...` starts the workers itself; `torchrun
--nproc-per-node 2 -m toolchain train ...` (any --nnodes/--rdzv-endpoint) starts them from outside.
Either way each worker runs the ordinary command, and the stages detect torchrun's environment.
"""

from toolchain.distributed.config import DistributedConfig, in_torchrun, is_main_process, rank, world_size

__all__ = ["DistributedConfig", "in_torchrun", "is_main_process", "rank", "world_size"]
