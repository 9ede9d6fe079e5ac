"""Data-parallel training through torchrun and ``DistributedDataParallel`` (issue 8, issue 11).

How the trainer uses it (alone every call below is a no-op and the run is an ordinary single-process run)::

    ctx = init_distributed(device)                 # joins the torchrun job when WORLD_SIZE > 1 model, _ =
    use_sync_batchnorm(model, ctx)      # CUDA: global-batch BatchNorm statistics model = wrap(model, ctx)
            # DDP: broadcasts rank 0's weights, all-reduces gradients
    for idx in global_batches:                     # every rank draws the same global batch ...
        idx, share = shard_batch(idx, ctx)         # ... and keeps its strided slice ...; (loss * share *
        ctx.world_size).backward(); opt.step() sums += stacked terms                      # on the device: no host sync
        per step
    logs = average_terms(means, ctx)               # once per epoch: averaged over the ranks, as floats
    sync_buffers(model, ctx)                       # BatchNorm statistics of rank 0 on every rank cleanup(ctx)

Semantics (same update as one process on the global batch, up to BatchNorm): the global batch stays
``train.batch_size``; rank ``r`` keeps the images ``r, r + W, r + 2W, ...`` (strided, so normal and weak anomalous
images spread over the ranks). DDP averages the ranks' gradients; each rank's loss is a mean over its slice, so the
trainer scales it by ``share * W`` (slice size / batch size times the world size) and the average becomes the
gradient of the global-batch mean even when the slices differ in size. BatchNorm: on CUDA (NCCL) every
BatchNorm becomes a ``SyncBatchNorm`` (:func:`use_sync_batchnorm`), so the batch statistics are those of the
global batch, as in one process (issue 15 row 11: 24 images on 8 GPUs left 3 per rank); on CPU (gloo, the
tests) SyncBatchNorm has no kernel and the statistics stay per rank. DDP broadcasts rank 0's buffers before each
forward, and :func:`sync_buffers` once at the end. Randomness: the batch order (the sampler generator) is identical on
every rank, so all ranks shard the same global batch; every other stream (augmentation, reparameterisation noise, python
/ numpy) is seeded with :func:`rank_seed`, so each rank draws its own crops, angles and noise; rank 0's seeds are the
single-process ones. Each rank's RNG states are gathered into the checkpoint (:func:`gather_objects`) and every rank
restores its own. Rank 0 alone writes results and checkpoints; every rank reads the same checkpoint on resume (a shared
file system across nodes).

Launch: :func:`launch` runs ``torchrun --standalone --nproc-per-node N -m avaga_lib.cli <args>`` (the CLI relaunches
``train`` itself when ``train.nproc > 1``); across nodes see docs/PERFORMANCE.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job.

    Attributes:
        rank: global rank (0 when not distributed). world_size: number of processes (1 when not distributed).
        local_rank: rank on this node (selects the GPU). backend: "nccl", "gloo" or None when not distributed.
        device: the device this rank trains on when distributed (cuda:local_rank or cpu), else None.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: torch.device | None = None

    @property
    def enabled(self) -> bool:
        """True when more than one process trains."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only writer of results, checkpoints and logs."""
        return self.rank == 0


SINGLE = DistContext()  # the context of an ordinary single-process run


def env_world_size() -> int:
    """``WORLD_SIZE`` set by torchrun (1 when absent)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device: torch.device | str = "cpu", timeout_s: float = 600.0) -> DistContext:
    """Join the torchrun job when ``WORLD_SIZE > 1``; otherwise return the single-process context.

    The backend follows the device: NCCL on CUDA, gloo on CPU. On CUDA each rank takes ``cuda:LOCAL_RANK``.
    Calling it again in an initialised process returns the current context.

    Args:
        device: the device the run would use alone ("cuda", "cpu", a torch.device). timeout_s: collective timeout (a
        stuck rank fails the job instead of hanging forever).

    Raises:
        RuntimeError: WORLD_SIZE > 1 without RANK / MASTER_ADDR (not started by torchrun).
    """
    world = env_world_size()
    if world <= 1:
        return SINGLE
    missing = [k for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(
            f"WORLD_SIZE={world} but {missing} are not set: start distributed runs with torchrun "
            "(python -m avaga_lib.cli train ... with train.nproc=N relaunches itself under torchrun)"
        )
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    kind = torch.device(device).type
    if kind == "cuda":
        backend = "nccl"
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    else:
        backend = "gloo"
        dev = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, backend=backend, device=dev)


def cleanup(ctx: DistContext) -> None:
    """Leave the process group (after a final barrier, so rank 0's writes are done before anyone exits)."""
    if ctx.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def shard_batch(indices: Tensor, ctx: DistContext = SINGLE) -> tuple[Tensor, float]:
    """This rank's images of a global batch: positions ``rank, rank + W, ...`` (strided, W = world size).

    Args:
        indices: the global batch (same on every rank). ctx: distributed context (alone: the whole batch, fraction 1).

    Returns:
        (indices of this rank, share = slice size / batch size: the weight of this rank's loss).

    Raises:
        ValueError: the batch has fewer images than ranks (raise train.batch_size or lower train.nproc).
    """
    if not ctx.enabled:
        return indices, 1.0
    if indices.numel() < ctx.world_size:
        raise ValueError(
            f"a batch of {indices.numel()} images cannot feed {ctx.world_size} processes: raise train.batch_size "
            "or lower train.nproc"
        )
    mine = indices[ctx.rank :: ctx.world_size]
    return mine, mine.numel() / indices.numel()


def wrap(module: nn.Module, ctx: DistContext, find_unused_parameters: bool = False) -> nn.Module:
    """``DistributedDataParallel(module)`` when distributed (rank 0's weights and buffers broadcast); else ``module``.

    Args:
        module: a module whose forward computes everything one backward differentiates. ctx: distributed context.
        find_unused_parameters: True when a configuration leaves some parameters without gradient (the ablations
            do: "w/o adv. recons" never uses the decoder), at the price of a graph traversal per step.
    """
    if not ctx.enabled:
        return module
    device_ids = [ctx.local_rank] if ctx.backend == "nccl" else None
    return DistributedDataParallel(module, device_ids=device_ids, find_unused_parameters=find_unused_parameters)


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (the module itself when not wrapped)."""
    return module.module if isinstance(module, DistributedDataParallel) else module


RANK_SEED_STRIDE = 2**20  # rank r seeds its streams with seed + r * stride (study seeds are small integers)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s own random streams; rank 0 keeps ``seed`` (single-process numbers unchanged)."""
    return seed + RANK_SEED_STRIDE * rank


def average_terms(terms: dict[str, Any], ctx: DistContext) -> dict[str, float]:
    """Loss terms (floats or 0-d tensors) as floats, averaged over the ranks: one collective, one host transfer.

    The trainer calls it once per epoch on the epoch's means (summed on the device); the bench once per timed window.
    A non-finite term on any rank makes the average non-finite on every rank, so all ranks stop together.
    """
    if not terms:
        return {}
    if ctx.backend == "nccl" and ctx.device is not None:
        dev = ctx.device
    elif ctx.enabled:
        dev = torch.device("cpu")
    else:
        dev = next((v.device for v in terms.values() if isinstance(v, Tensor)), torch.device("cpu"))
    dtype = torch.float32 if dev.type == "mps" else torch.float64  # MPS has no float64
    values = torch.stack([torch.as_tensor(v, device=dev).detach().to(dtype).reshape(()) for v in terms.values()])
    if ctx.enabled:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values = values / ctx.world_size
    return dict(zip(terms, values.tolist()))


def gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's ``obj`` in rank order, on every rank (``[obj]`` alone); e.g. the ranks' RNG states."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def use_sync_batchnorm(module: nn.Module, ctx: DistContext) -> tuple[nn.Module, bool]:
    """BatchNorm -> ``SyncBatchNorm`` under NCCL (global-batch statistics); unchanged alone or on gloo (no kernel).

    The converted layers share the original parameters and buffers (optimisers built before stay valid) and keep
    their state-dict keys, so checkpoints load into plain BatchNorm networks.

    Returns:
        (the module, whether it was converted).
    """
    if not ctx.enabled or ctx.backend != "nccl":
        return module, False
    return nn.SyncBatchNorm.convert_sync_batchnorm(module), True


def sync_buffers(module: nn.Module, ctx: DistContext, src: int = 0) -> None:
    """Broadcast rank ``src``'s buffers (BatchNorm running statistics) to every rank (no-op alone).

    DDP broadcasts them before each forward; the trainer calls this once after the last step, so every rank ends
    with the weights rank 0 saves.
    """
    if not ctx.enabled:
        return
    with torch.no_grad():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=src)


def same_on_all_ranks(value: int, ctx: DistContext) -> bool:
    """True when every rank passes the same integer (e.g. the epoch a run resumes from)."""
    if not ctx.enabled:
        return True
    t = torch.tensor([value, -value], dtype=torch.int64)
    if ctx.backend == "nccl" and ctx.device is not None:
        t = t.to(ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t[0]) == value and int(-t[1]) == value


def torchrun_command(
    cli_args: Sequence[str],
    nproc: int,
    nnodes: int = 1,
    node_rank: int | None = None,
    rdzv_endpoint: str | None = None,
    module: str = "avaga_lib.cli",
) -> list[str]:
    """The torchrun command line of a distributed run (``python -m torch.distributed.run``, same as ``torchrun``).

    One node: ``--standalone`` (torchrun picks a free local port). Several nodes: every node runs the same command
    with ``--nnodes``, the c10d rendezvous endpoint ``host:port`` of one node, and its own ``--node-rank``.

    Args:
        cli_args: arguments after the module, e.g. ``["train", "--profile", "paper", "--set", "train.nproc=8"]``.
        nproc: processes on this node (one per GPU). nnodes: number of nodes. node_rank: this node's rank (multi-node
        only). rdzv_endpoint: ``host:port`` reachable from every node (multi-node only). module: python module to run.
    """
    if nproc < 1 or nnodes < 1:
        raise ValueError(f"torchrun_command: nproc={nproc} and nnodes={nnodes} must be >= 1")
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}"]
    if nnodes == 1:
        cmd.append("--standalone")
    else:
        if rdzv_endpoint is None or node_rank is None:
            raise ValueError("multi-node torchrun needs rdzv_endpoint='host:port' and this node's node_rank")
        cmd += [f"--nnodes={nnodes}", f"--node-rank={node_rank}", "--rdzv-backend=c10d"]
        cmd.append(f"--rdzv-endpoint={rdzv_endpoint}")
    return [*cmd, "-m", module, *cli_args]


def launch(cli_args: Sequence[str], nproc: int, env: dict[str, str] | None = None, **kwargs: object) -> int:
    """Run ``torchrun ... -m avaga_lib.cli <cli_args>`` and return its exit code (0 = every rank succeeded).

    With ``nproc == 1`` the command runs without torchrun (plain ``python -m avaga_lib.cli``).

    Args:
        cli_args: e.g. ``["train", "--profile", "smoke", "--set", "data.category=weave"]``. nproc: processes per node
        (``train.nproc``). env: extra environment variables (e.g. ``OMP_NUM_THREADS``).
        **kwargs: passed to :func:`torchrun_command` (nnodes, node_rank, rdzv_endpoint, module).
    """
    module = str(kwargs.pop("module", "avaga_lib.cli"))
    if nproc == 1 and int(kwargs.get("nnodes", 1)) == 1:  # type: ignore[call-overload]
        cmd = [sys.executable, "-m", module, *cli_args]
    else:
        cmd = torchrun_command(cli_args, nproc, module=module, **kwargs)  # type: ignore[arg-type]
    full_env = {**os.environ, **(env or {})}
    if nproc > 1 and "OMP_NUM_THREADS" not in full_env:
        # torchrun would set 1 thread per process; on CPU share the cores between the ranks instead
        full_env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    return subprocess.run(cmd, env=full_env, check=False).returncode
