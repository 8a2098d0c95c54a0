"""Several processes (torchrun / torch.distributed): set-up from the environment and the
collectives the ITC/ITM negatives need. A single process needs no process group: every helper
is then the identity (or 0 / 1).

The backend is NCCL for CUDA devices and gloo otherwise; ``MF2_DIST_BACKEND=gloo`` forces gloo.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.nn.functional as F


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def init_from_env(device: str = "cpu", backend: str | None = None) -> tuple[int, int]:
    """(rank, world size) of this process; under torchrun (WORLD_SIZE > 1) the process group is
    created on first call, NCCL when ``device`` is CUDA (and torch has it), gloo otherwise; or
    ``backend`` when given ("gloo" for the processes of ``extract-features``, which only wait
    for each other and may share a GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        cuda = torch.device(device).type == "cuda" and torch.cuda.is_available()
        backend = backend or ("nccl" if cuda and os.environ.get("MF2_DIST_BACKEND") != "gloo" else "gloo")
        if cuda and backend == "nccl":  # one GPU per process: LOCAL_RANK picks it
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def local_device(device: str, share: bool = False) -> torch.device:
    """The device this process uses: under torchrun with CUDA, the GPU of its LOCAL_RANK (with
    ``share``, LOCAL_RANK modulo the GPUs there are: several processes to a GPU)."""
    d = torch.device(device)
    if d.type == "cuda" and d.index is None and world_size() > 1:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        return torch.device("cuda", local % max(1, torch.cuda.device_count()) if share else local)
    return d


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank along dim 0 (ranks may hold different row counts);
    gradients flow back to the local part for floating-point tensors. One process: ``x``."""
    if world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([x.shape[0]], device=x.device))
    sizes = [int(s) for s in sizes]
    padded = F.pad(x, [0, 0] * (x.dim() - 1) + [0, max(sizes) - x.shape[0]]) if x.shape[0] < max(sizes) else x
    parts = all_gather(padded) if x.dtype.is_floating_point else gather_nograd(padded)
    return torch.cat([p[:n] for p, n in zip(parts, sizes)], 0)


def gather_nograd(x: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's ``x`` (same shape on every rank), without autograd."""
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return parts


def gather_objects(obj) -> list:
    """Every rank's ``obj`` (picklable: e.g. a dict of CPU tensors), in rank order, on every
    rank. One process: ``[obj]``."""
    if world_size() == 1:
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def rank_offset(n: int, device="cpu") -> int:
    """Where this rank's ``n`` rows start in a gathered batch."""
    if world_size() == 1:
        return 0
    sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([n], device=device))
    return int(sum(int(s) for s in sizes[:rank()]))


def max_over_ranks(value: int, device="cpu") -> int:
    """The largest ``value`` over all ranks (texts are padded to it before gathering)."""
    if world_size() == 1:
        return value
    t = torch.tensor([value], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t)


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in DistributedDataParallel when several processes train, else itself."""
    if world_size() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [next(model.parameters()).device.index] if next(model.parameters()).is_cuda else None
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)
