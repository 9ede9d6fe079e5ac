"""Tests of avaga_lib.distributed: sharding, launch command, and 2 gloo processes agreeing with one process."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from avaga_lib import distributed as D


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _toy(bn: bool) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(3, 4, 3, padding=1)]
    if bn:
        layers.append(nn.BatchNorm2d(4))
    layers += [nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 1)]
    return nn.Sequential(*layers)


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(11, 3, 8, 8, generator=g), torch.rand(11, 1, generator=g)


def _train(model: nn.Module, ctx: D.DistContext, epochs: int = 2) -> None:
    """Adam on an MSE mean over this rank's slice; gradients all-reduced with slice weights."""
    x, y = _data()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for epoch in range(epochs):
        for idx, frac in D.epoch_batches(x.shape[0], 4, epoch, seed=3, ctx=ctx):
            loss = ((model(x[idx]) - y[idx]) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            D.allreduce_gradients(model.parameters(), ctx, frac)
            opt.step()
            D.sync_buffers(model, ctx)


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(
        {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1",
         "MASTER_PORT": str(port)}
    )  # fmt: skip
    torch.set_num_threads(1)
    ctx = D.init_distributed("cpu", timeout_s=60)
    assert ctx.enabled and ctx.backend == "gloo" and ctx.rank == rank
    torch.manual_seed(100 + rank)  # different init per rank: broadcast_module must make them equal
    plain, with_bn = _toy(bn=False), _toy(bn=True)
    D.broadcast_module(plain, ctx)
    D.broadcast_module(with_bn, ctx)
    _train(plain, ctx)
    _train(with_bn, ctx)
    logs = D.mean_over_ranks({"r": float(rank)}, ctx)
    record = {"plain": plain.state_dict(), "hash_plain": D.state_hash(plain), "hash_bn": D.state_hash(with_bn)}
    torch.save({**record, "logs": logs}, Path(out) / f"rank{rank}.pt")
    D.cleanup(ctx)


@pytest.mark.timeout(120)
def test_two_gloo_ranks_agree_and_match_single_process(tmp_path: Path) -> None:
    # fork: the workers inherit the imported torch (spawn would re-import it, ~10 s per process on a busy machine)
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert r0["hash_plain"] == r1["hash_plain"]
    assert r0["hash_bn"] == r1["hash_bn"]  # BN running stats synced from rank 0
    assert r0["logs"] == {"r": 0.5}
    torch.manual_seed(100)  # rank 0's init, which broadcast_module gave every rank
    ref = _toy(bn=False)
    _train(ref, D.SINGLE)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(r0["plain"][k], v, rtol=1e-4, atol=1e-5)  # global-batch gradient == 2-rank one
    torch.manual_seed(100)
    untrained = _toy(bn=False)
    assert not torch.allclose(untrained.state_dict()["0.weight"], r0["plain"]["0.weight"])  # training did happen


def test_epoch_batches_cover_epoch_once_and_split_evenly() -> None:
    n, bs, world = 23, 6, 3
    per_rank = [list(D.epoch_batches(n, bs, epoch=1, seed=0, ctx=D.DistContext(r, world))) for r in range(world)]
    assert len({len(b) for b in per_rank}) == 1  # same number of steps on every rank
    seen = torch.cat([idx for batches in per_rank for idx, _ in batches])
    assert seen.unique().numel() == seen.numel() == n  # tail of 5 >= 3 ranks is kept, nothing twice
    for step in range(len(per_rank[0])):
        assert sum(per_rank[r][step][1] for r in range(world)) == pytest.approx(1.0)
    single = [i for i, _ in D.epoch_batches(n, bs, epoch=1, seed=0)]
    for s, batch in enumerate(single):  # ranks' slices of step s together are the single-process batch s
        merged = torch.cat([per_rank[r][s][0] for r in range(world)])
        assert sorted(merged.tolist()) == sorted(batch.tolist())
    other = torch.cat([i for i, _ in D.epoch_batches(n, bs, epoch=2, seed=0)])
    assert not torch.equal(torch.cat(single), other)


def test_shard_batch_is_strided() -> None:
    idx = torch.arange(10, 17)
    mine, frac = D.shard_batch(idx, D.DistContext(1, 3))
    assert mine.tolist() == [11, 14] and frac == pytest.approx(2 / 7)
    assert D.shard_batch(idx)[1] == 1.0 and torch.equal(D.shard_batch(idx)[0], idx)
    with pytest.raises(ValueError, match="train.batch_size"):
        D.shard_batch(torch.arange(2), D.DistContext(0, 3))
    assert D.all_finite({"a": 1.0}, D.SINGLE) and not D.all_finite({"a": float("nan")}, D.SINGLE)


def test_epoch_batches_rejects_batch_smaller_than_world() -> None:
    with pytest.raises(ValueError, match="batch_size=2"):
        list(D.epoch_batches(10, 2, 0, 0, D.DistContext(0, 4)))
    assert [i.numel() for i, _ in D.epoch_batches(9, 4, 0, 0, D.DistContext(1, 2))] == [2, 2]  # tail 1 < 2 dropped


def test_single_process_helpers_are_noops() -> None:
    assert D.init_distributed("cpu") == D.SINGLE or D.env_world_size() > 1
    m = _toy(bn=True)
    h = D.state_hash(m)
    D.broadcast_module(m, D.SINGLE)
    D.sync_buffers(m, D.SINGLE)
    D.allreduce_gradients(m.parameters(), D.SINGLE)
    assert D.state_hash(m) == h
    with torch.no_grad():
        m[0].weight[0, 0, 0, 0] += 1.0
    assert D.state_hash(m) != h


def test_torchrun_command_shapes() -> None:
    one = D.torchrun_command(["train", "--profile", "smoke"], nproc=2)
    assert one[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--standalone" in one and "--nproc-per-node=2" in one
    assert one[-4:] == ["avaga_lib.cli", "train", "--profile", "smoke"]
    multi = D.torchrun_command(["train"], nproc=8, nnodes=2, node_rank=1, rdzv_endpoint="node0:29500")
    assert "--standalone" not in multi and "--rdzv-endpoint=node0:29500" in multi and "--node-rank=1" in multi
    with pytest.raises(ValueError, match="rdzv_endpoint"):
        D.torchrun_command(["train"], nproc=8, nnodes=2)


def test_init_distributed_requires_torchrun_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(RuntimeError, match="torchrun"):
        D.init_distributed("cpu")


def _trainer_worker(rank: int, world: int, port: int, root: str, out: str, epochs: int) -> None:
    """One torchrun-like rank running the real trainer (train_run) on the tiny dataset."""
    os.environ.update(
        {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1",
         "MASTER_PORT": str(port)}
    )  # fmt: skip
    torch.set_num_threads(1)
    from avaga_lib.config import make_config
    from avaga_lib.train import train_run

    cfg = make_config(
        "smoke",
        {"data.dataset": "embedded", "data.root": root, "data.category": "weave", "data.image_size": 64,
         "train.epochs": epochs, "train.batch_size": 4, "train.nproc": world, "train.device": "cpu",
         "model.pretrained": "none", "results_dir": str(Path(out) / "results")},
    )  # fmt: skip
    res = train_run(cfg, progress=False)
    losses = res.history.drop(columns="time_s").to_dict("list")  # epoch time differs per rank
    hashes = {"model": D.state_hash(res.model), "disc": D.state_hash(res.disc), "notes": res.notes,
              "epochs_done": res.epochs_done, "rank": res.extra.get("rank"), "losses": losses}
    torch.save(hashes, Path(out) / f"trainer_rank{rank}_e{epochs}.pt")


@pytest.mark.timeout(180)
def test_trainer_two_gloo_ranks_agree_and_resume(tiny_dataset: Path, tmp_path: Path) -> None:
    """train_run under 2 gloo processes: same final weights on both ranks, rank 0 alone writes, resume works."""
    for epochs in (1, 2):  # the second call resumes from epoch 1's checkpoint on both ranks
        mp.start_processes(_trainer_worker, args=(2, _free_port(), str(tiny_dataset), str(tmp_path), epochs),
                           nprocs=2, join=True, start_method="fork")  # fmt: skip
        r0, r1 = (torch.load(tmp_path / f"trainer_rank{r}_e{epochs}.pt", weights_only=False) for r in (0, 1))
        assert (r0["rank"], r1["rank"]) == (0, 1)
        assert r0["model"] == r1["model"] and r0["disc"] == r1["disc"]
        assert r0["epochs_done"] == r1["epochs_done"] == epochs
        assert r0["losses"] == r1["losses"]  # epoch means averaged over ranks
    for r in (r0, r1):
        assert any("resumed from epoch 1" in n for n in r["notes"])
    run_dirs = list((tmp_path / "results").rglob("checkpoint.pt"))
    assert len(run_dirs) == 1
    ck = torch.load(run_dirs[0], weights_only=False)
    assert ck["epoch"] == 2
    model_hash_ck = D.state_hash(_load_into_model(ck))
    assert model_hash_ck == r0["model"]


def _load_into_model(ck: dict) -> nn.Module:
    from avaga_lib.config import RunConfig
    from avaga_lib.train import build_networks

    cfg = RunConfig.from_dict(ck["config"])
    model, _, _ = build_networks(cfg)
    model.load_state_dict(ck["model"])
    return model
