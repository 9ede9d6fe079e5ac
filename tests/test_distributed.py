"""Tests of avaga_lib.training.distributed and the DDP trainer: sharding, launch command, 2 gloo processes vs one
process."""

from __future__ import annotations

import hashlib
import math
import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from avaga_lib.config import make_config
from avaga_lib.models.autoencoder.model import BergmannAE
from avaga_lib.training import distributed as D
from avaga_lib.training import step as Step


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _state_hash(module: nn.Module) -> str:
    """SHA-256 (16 hex) of a module's state dict (parameters and buffers, in order): equal weights, equal hash."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _ae_steps(nets: Step.Nets, ctx: D.DistContext, steps: int = 2) -> None:
    """``train_step`` of the L2 autoencoder on global batches of 5 images (slices of 3 and 2 images on 2 ranks)."""
    cfg = make_config("smoke", {"method": "ae_l2", "data.image_size": 32})
    g = torch.Generator().manual_seed(0)
    x = torch.rand(steps, 5, 3, 32, 32, generator=g)
    for s in range(steps):
        idx, share = D.shard_batch(torch.arange(5), ctx)
        Step.train_step(cfg, nets, x[s, idx], torch.zeros(len(idx)), loss_scale=share * ctx.world_size)


def _ae_nets(ctx: D.DistContext) -> Step.Nets:
    model = BergmannAE(32, latent_dim=8)
    return Step.make_nets(model, None, torch.optim.Adam(model.parameters(), lr=1e-2), None, ctx)


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(
        {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1",
         "MASTER_PORT": str(port)}
    )  # fmt: skip
    torch.set_num_threads(1)
    ctx = D.init_distributed("cpu", timeout_s=60)
    assert ctx.enabled and ctx.backend == "gloo" and ctx.rank == rank
    torch.manual_seed(100 + rank)  # different init per rank: the DDP wrapper must broadcast rank 0's weights
    nets = _ae_nets(ctx)
    _ae_steps(nets, ctx)
    logs = D.average_terms({"r": float(rank), "t": torch.tensor(2.0 * rank)}, ctx)
    model = D.unwrap(nets.model)
    torch.save({"weights": model.state_dict(), "hash": _state_hash(model), "logs": logs}, Path(out) / f"r{rank}.pt")
    D.cleanup(ctx)


@pytest.mark.timeout(120)
def test_two_gloo_ranks_agree_and_match_single_process(tmp_path: Path) -> None:
    # fork: the workers inherit the imported torch (spawn would re-import it, ~10 s per process on a busy machine)
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork")
    r0, r1 = (torch.load(tmp_path / f"r{r}.pt", weights_only=False) for r in (0, 1))
    assert r0["hash"] == r1["hash"]
    assert r0["logs"] == r1["logs"] == {"r": 0.5, "t": 1.0}
    torch.manual_seed(100)  # rank 0's init, which the DDP wrapper gave every rank
    ref = _ae_nets(D.SINGLE)
    _ae_steps(ref, D.SINGLE)
    for k, v in ref.model.state_dict().items():  # uneven slices (3 + 2 images): still the global-batch gradient
        torch.testing.assert_close(r0["weights"][k], v, rtol=1e-4, atol=1e-5)
    torch.manual_seed(100)
    untrained = _ae_nets(D.SINGLE).model
    assert not torch.allclose(untrained.state_dict()["encoder.0.weight"], r0["weights"]["encoder.0.weight"])


def test_shard_batch_is_strided() -> None:
    idx = torch.arange(10, 17)
    mine, frac = D.shard_batch(idx, D.DistContext(1, 3))
    assert mine.tolist() == [11, 14] and frac == pytest.approx(2 / 7)
    assert D.shard_batch(idx)[1] == 1.0 and torch.equal(D.shard_batch(idx)[0], idx)
    with pytest.raises(ValueError, match="train.batch_size"):
        D.shard_batch(torch.arange(2), D.DistContext(0, 3))


def test_single_process_helpers_are_noops() -> None:
    assert D.init_distributed("cpu") == D.SINGLE or D.env_world_size() > 1
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    assert D.wrap(m, D.SINGLE) is m and D.unwrap(m) is m
    h = _state_hash(m)
    D.sync_buffers(m, D.SINGLE)
    assert _state_hash(m) == h
    logs = D.average_terms({"a": 1.5, "b": torch.tensor(float("nan"))}, D.SINGLE)
    assert logs["a"] == 1.5 and math.isnan(logs["b"])
    assert D.same_on_all_ranks(3, D.SINGLE)


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
    from avaga_lib.training.train import train_run

    cfg = make_config(
        "smoke",
        {"data.dataset": "embedded", "data.root": root, "data.category": "weave", "data.image_size": 64,
         "train.epochs": epochs, "train.batch_size": 4, "train.nproc": world, "train.device": "cpu",
         "model.pretrained": "none", "results_dir": str(Path(out) / "results")},
    )  # fmt: skip
    res = train_run(cfg, progress=False)
    losses = res.history.drop(columns="time_s").to_dict("list")  # epoch time differs per rank
    hashes = {"model": _state_hash(res.model), "disc": _state_hash(res.disc), "notes": res.notes,
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
    model_hash_ck = _state_hash(_load_into_model(ck))
    assert model_hash_ck == r0["model"]


def _load_into_model(ck: dict) -> nn.Module:
    from avaga_lib.config import RunConfig
    from avaga_lib.models.networks import build_networks

    cfg = RunConfig.from_dict(ck["config"])
    model, _, _ = build_networks(cfg)
    model.load_state_dict(ck["model"])
    return model
