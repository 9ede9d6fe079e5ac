"""Data-parallel training through torchrun (issue 8): process group, epoch sharding, gradient all-reduce, launch.

Design (why not ``DistributedDataParallel``): one AVAGA step runs the discriminator three times (the adversarial
term of the generator objective, then real and fake in the D step), and the generator step back-propagates into
the discriminator's parameters too (the trainer zeroes them before the D step). DDP's reducer assumes one forward
per backward and would all-reduce the discriminator's generator-step gradients for nothing (and, with
``find_unused_parameters=False``, errors when a step leaves a parameter without gradient, as the ablations do).
Grad-CAM is closed form in ``attention.py`` (no ``torch.autograd.grad``), so a plain first-order ``backward()``
gives every gradient. The trainer therefore keeps plain modules and calls :func:`allreduce_gradients` after each
``backward()``: one coalesced all-reduce of the flattened gradients per optimizer step, the same communication
volume as DDP, without DDP's overlap with the backward (measured in ``docs/PERFORMANCE.md``).

Semantics (same results as one process, up to BatchNorm): the *global* batch stays ``train.batch_size``; every
rank draws the same batches from the same seeded generator (the trainer's own ``epoch_batches``), and rank ``r``
keeps the images ``r, r + W, r + 2W, ...`` of each batch (:func:`shard_batch`; strided, so normal and weak
anomalous images spread over the ranks); gradients are summed weighted by slice size / batch size, so the update
equals the single-process update on the global batch (exactly so for models without BatchNorm; BatchNorm
statistics are per rank, as with DDP without SyncBatchNorm). Buffers (BatchNorm running statistics) are broadcast
from rank 0 after each step, like DDP's ``broadcast_buffers``. Every RNG stream is identical on every rank (so a
resumed run continues exactly): ranks see different images with the same augmentation / noise draws. Rank 0 alone
writes results and checkpoints; every rank reads the same checkpoint on resume (a shared file system across nodes).

Usage in a trainer::

    ctx = init_distributed(device)             # no-op (world 1) unless started by torchrun with WORLD_SIZE > 1
    device = ctx.device or device
    broadcast_module(model, ctx)               # identical initial weights
    for epoch ...:
        for idx in trainer_batches:
            idx, frac = shard_batch(idx, ctx)
            ...; loss.backward(); allreduce_gradients(model.parameters(), ctx, frac); opt.step()
            sync_buffers(model, ctx)
    if ctx.is_main: write results
    cleanup(ctx)

Launch: :func:`launch` (``python -m avaga_lib.distributed --nproc 2 -- <cli train args>``) spawns
``torchrun --standalone --nproc_per_node N -m avaga_lib.cli train ...``; across nodes see docs/PERFORMANCE.md.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job.

    Attributes:
        rank: global rank (0 when not distributed).
        world_size: number of processes (1 when not distributed).
        local_rank: rank on this node (selects the GPU).
        backend: "nccl", "gloo" or None when not distributed.
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
        device: the device the run would use alone ("cuda", "cpu", a torch.device).
        timeout_s: collective timeout (a stuck rank fails the job instead of hanging forever).

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
            "(python -m avaga_lib.distributed --nproc N -- train ...)"
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


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op alone)."""
    if ctx.enabled:
        dist.barrier()


def epoch_batches(
    n: int, batch_size: int, epoch: int, seed: int, ctx: DistContext = SINGLE, shuffle: bool = True
) -> Iterator[tuple[Tensor, float]]:
    """This rank's share of each global batch of one epoch.

    Every rank draws the same permutation (seeded by ``seed`` and ``epoch``), cuts it into global batches of
    ``batch_size`` and keeps its :func:`shard_batch` slice, so every rank makes the same number of steps. A
    trailing global batch with fewer images than ranks is dropped (otherwise a rank would have nothing).

    Args:
        n: number of training images.
        batch_size: the global batch (``train.batch_size``).
        epoch: epoch number (changes the permutation).
        seed: training seed.
        ctx: distributed context.
        shuffle: False keeps index order (tests).

    Yields:
        (indices, fraction): int64 indices of this rank's slice, and slice size / global batch size (the weight of
        this rank's mean gradient in :func:`allreduce_gradients`).
    """
    if n <= 0 or batch_size <= 0:
        raise ValueError(f"epoch_batches: n={n} images and batch_size={batch_size} must be positive")
    if batch_size < ctx.world_size:
        raise ValueError(
            f"train.batch_size={batch_size} is smaller than the {ctx.world_size} processes: every rank needs at "
            "least one image per step; raise train.batch_size or lower train.nproc"
        )
    if shuffle:
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)  # same on every rank, new every epoch
        perm = torch.randperm(n, generator=g)
    else:
        perm = torch.arange(n)
    for start in range(0, n, batch_size):
        glob = perm[start : start + batch_size]
        if glob.numel() < ctx.world_size:
            break
        yield shard_batch(glob, ctx)


def shard_batch(indices: Tensor, ctx: DistContext = SINGLE) -> tuple[Tensor, float]:
    """This rank's images of a global batch: positions ``rank, rank + W, ...`` (strided, W = world size).

    Args:
        indices: the global batch (same on every rank).
        ctx: distributed context (alone: the whole batch, fraction 1).

    Returns:
        (indices of this rank, fraction = slice size / batch size) for :func:`allreduce_gradients`.

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


def all_finite(values: dict[str, float], ctx: DistContext) -> bool:
    """True when every value is finite on every rank (collective, so all ranks stop together on a NaN)."""
    import math

    ok = all(math.isfinite(v) for v in values.values())
    if not ctx.enabled:
        return ok
    t = torch.tensor([0.0 if ok else 1.0])
    if ctx.backend == "nccl" and ctx.device is not None:
        t = t.to(ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item()) == 0.0


def _flat_grads(params: Sequence[nn.Parameter]) -> tuple[list[nn.Parameter], Tensor | None]:
    with_grad = [p for p in params if p.grad is not None]
    if not with_grad:
        return with_grad, None
    return with_grad, torch.cat([p.grad.reshape(-1) for p in with_grad])


def allreduce_gradients(params: Iterable[nn.Parameter], ctx: DistContext, fraction: float | None = None) -> None:
    """Replace every gradient by the global-batch gradient: sum over ranks of ``fraction_r * grad_r``.

    Each rank's loss is a mean over its slice, so weighting by slice size / global size gives the mean over the
    global batch (plain averaging when ``fraction`` is None). One coalesced all-reduce per call (gradients are
    flattened into one buffer, per dtype). Parameters without a gradient must be the same on every rank (they
    are: every rank runs the same graph).

    Args:
        params: parameters after ``backward()``.
        ctx: distributed context (no-op alone).
        fraction: this rank's slice size / global batch size (from :func:`epoch_batches`).
    """
    if not ctx.enabled:
        return
    plist = [p for p in params if p.requires_grad]
    by_dtype: dict[torch.dtype, list[nn.Parameter]] = {}
    for p in plist:
        if p.grad is not None:
            by_dtype.setdefault(p.grad.dtype, []).append(p)
    scale = fraction if fraction is not None else 1.0 / ctx.world_size
    for group in by_dtype.values():
        with_grad, flat = _flat_grads(group)
        if flat is None:
            continue
        flat.mul_(scale)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for p in with_grad:
            k = p.grad.numel()
            p.grad.copy_(flat[offset : offset + k].view_as(p.grad))
            offset += k


def _broadcast_coalesced(tensors: list[Tensor], src: int) -> None:
    """Broadcast tensors from ``src`` as one flat buffer per dtype (one collective instead of one per tensor)."""
    by_dtype: dict[torch.dtype, list[Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for group in by_dtype.values():
        flat = torch.cat([t.reshape(-1) for t in group])
        dist.broadcast(flat, src=src)
        offset = 0
        for t in group:
            k = t.numel()
            t.copy_(flat[offset : offset + k].view_as(t))
            offset += k


def broadcast_module(module: nn.Module, ctx: DistContext, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank (identical start, as DDP's constructor does)."""
    if not ctx.enabled:
        return
    with torch.no_grad():
        _broadcast_coalesced([t.data for t in list(module.parameters()) + list(module.buffers())], src)


def sync_buffers(module: nn.Module, ctx: DistContext, src: int = 0) -> None:
    """Broadcast rank ``src``'s buffers (BatchNorm running statistics), as DDP's ``broadcast_buffers=True``."""
    if not ctx.enabled:
        return
    buffers = [b.data for b in module.buffers()]
    if buffers:
        with torch.no_grad():
            _broadcast_coalesced(buffers, src)


def same_on_all_ranks(value: int, ctx: DistContext) -> bool:
    """True when every rank passes the same integer (e.g. the epoch a run resumes from)."""
    if not ctx.enabled:
        return True
    t = torch.tensor([value, -value], dtype=torch.int64)
    if ctx.backend == "nccl" and ctx.device is not None:
        t = t.to(ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t[0]) == value and int(-t[1]) == value


def mean_over_ranks(values: dict[str, float], ctx: DistContext) -> dict[str, float]:
    """Average a dict of scalars (loss logs) over the ranks that hold each key; identity alone."""
    if not ctx.enabled:
        return dict(values)
    gathered: list[dict[str, float] | None] = [None] * ctx.world_size
    dist.all_gather_object(gathered, {k: float(v) for k, v in values.items()})
    keys = list(dict.fromkeys(k for d in gathered if d for k in d))
    out: dict[str, float] = {}
    for k in keys:
        vals = [d[k] for d in gathered if d and k in d]
        out[k] = sum(vals) / len(vals)
    return out


def state_hash(module: nn.Module) -> str:
    """SHA-256 (16 hex) of a module's state dict (parameters and buffers, in order): equal weights, equal hash."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


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
        nproc: processes on this node (one per GPU).
        nnodes: number of nodes.
        node_rank: this node's rank (multi-node only).
        rdzv_endpoint: ``host:port`` reachable from every node (multi-node only).
        module: python module to run.
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
        cli_args: e.g. ``["train", "--profile", "smoke", "--set", "data.category=weave"]``.
        nproc: processes per node (``train.nproc``).
        env: extra environment variables (e.g. ``OMP_NUM_THREADS``).
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


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m avaga_lib.distributed --nproc N [--nnodes M --node-rank R --rdzv host:port] -- <cli args>``."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m avaga_lib.distributed", description=main.__doc__)
    p.add_argument("--nproc", type=int, required=True, help="processes per node (one per GPU)")
    p.add_argument("--nnodes", type=int, default=1)
    p.add_argument("--node-rank", type=int, default=None)
    p.add_argument("--rdzv", default=None, help="host:port of the rendezvous (multi-node)")
    p.add_argument("cli_args", nargs=argparse.REMAINDER, help="-- followed by avaga_lib.cli arguments")
    a = p.parse_args(argv)
    rest = a.cli_args[1:] if a.cli_args[:1] == ["--"] else a.cli_args
    if not rest:
        p.error("give the avaga_lib.cli arguments after --, e.g. -- train --profile smoke")
    kw: dict[str, object] = {"nnodes": a.nnodes}
    if a.nnodes > 1:
        kw |= {"node_rank": a.node_rank, "rdzv_endpoint": a.rdzv}
    return launch(rest, a.nproc, **kw)


if __name__ == "__main__":
    raise SystemExit(main())
