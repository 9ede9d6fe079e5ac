"""Trainer: exact resume, determinism, NaN guard, atomic checkpoints, Ctrl-C, balanced weak sampling."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from avaga_lib import runtime as R
from avaga_lib.config import make_config
from avaga_lib.data import generate_dataset, make_splits
from avaga_lib.run_folder import CHECKPOINT_NAME
from avaga_lib.training import train as T
from avaga_lib.training.checkpoint import NonFiniteLossError, TrainingInterrupted


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A very small embedded category (6 train = 4 + 2 validation, 4 + 4 test images at 64 px)."""
    root = tmp_path_factory.mktemp("emb")
    return generate_dataset(root / "embedded", categories=["weave"], n_train=6, n_test_good=4, n_test_bad=4, size=64)


def _cfg(root: Path, results: Path, **over: object):
    base = {
        "data.root": str(root),
        "data.category": "weave",
        "data.image_size": 64,
        "data.val_fraction": 0.2,
        "model.pretrained": "none",  # never download in tests
        "model.latent_channels": 32,  # small decoder: the tests check mechanics, not accuracy
        "train.batch_size": 4,  # AVAGA: one step per epoch
        "train.epochs": 2,
        "results_dir": str(results),
    }
    base.update(over)
    return make_config("smoke", base)


def _states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_epoch_batches_cover_normals_and_every_weak_image() -> None:
    g = torch.Generator().manual_seed(0)
    batches = T.epoch_batches(n_normal=10, n_weak=3, batch_size=4, generator=g)
    flat = torch.cat(batches).tolist()
    assert sorted(i for i in flat if i < 10) == list(range(10))  # every normal image exactly once
    assert {i for i in flat if i >= 10} == {10, 11, 12}  # every weak image at least once per epoch
    assert all(any(i >= 10 for i in b.tolist()) for b in batches)  # each batch holds an anomalous image
    assert all(len(b) >= 2 for b in T.epoch_batches(9, 0, 8, g))  # near-equal split, no batch of one


def test_resume_equals_uninterrupted_run(tiny_root: Path, tmp_path: Path) -> None:
    small = {"data.image_size": 32}  # 32 px: the mechanics of resumption do not depend on the size
    straight = T.train_run(_cfg(tiny_root, tmp_path / "a", **small, **{"train.epochs": 2}), progress=False)
    first = T.train_run(_cfg(tiny_root, tmp_path / "b", **small, **{"train.epochs": 1}), progress=False)
    assert first.epochs_done == 1
    resumed = T.train_run(_cfg(tiny_root, tmp_path / "b", **small, **{"train.epochs": 2}), progress=False)
    assert resumed.resumed_from == 1 and resumed.epochs_done == 2
    assert _states_equal(straight.model, resumed.model)
    assert _states_equal(straight.disc, resumed.disc)
    assert straight.history.drop(columns="time_s").equals(resumed.history.drop(columns="time_s"))
    assert (Path(resumed.cfg.run_dir) / "losses.csv").read_text().count("\n") == 3  # header + 2 epochs
    with pytest.warns(UserWarning, match="different config"):  # never resumes another config's weights
        other_cfg = _cfg(tiny_root, tmp_path / "b", **small, **{"train.lr": 1e-3, "train.epochs": 1})
        other = T.train_run(other_cfg, progress=False)
    assert other.resumed_from == 0 and other.epochs_done == 1


def test_weak_setting_trains_with_classifier(tiny_root: Path, tmp_path: Path) -> None:
    cfg = _cfg(tiny_root, tmp_path, **{"train.setting": "weak", "train.epochs": 1})
    res = T.train_run(cfg, progress=False)
    assert res.extra["n_train_weak"] >= 1
    assert res.model.classifier is not None
    assert all(math.isfinite(v) for v in res.history.drop(columns=["epoch"]).iloc[0])


def test_nan_guard_names_epoch_and_term_and_keeps_checkpoint(
    tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import avaga_lib.models.autoencoder.method as B  # where the AE step calls its loss

    real = B.reconstruction_loss
    calls = {"n": 0}

    def poisoned(kind: str, x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        loss = real(kind, x, recon)
        return loss * float("nan") if calls["n"] > 2 else loss  # 2 batches per epoch: epoch 2 is poisoned

    monkeypatch.setattr(B, "reconstruction_loss", poisoned)
    cfg = _cfg(tiny_root, tmp_path, method="ae_l2", **{"train.epochs": 3, "train.batch_size": 2})
    with pytest.raises(NonFiniteLossError, match=r"'loss'.*epoch 2") as info:
        T.train_run(cfg, progress=False)
    assert info.value.epoch == 2 and info.value.term == "loss"
    ck = torch.load(Path(cfg.run_dir) / CHECKPOINT_NAME, weights_only=False)
    assert ck["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ck["model"].values())


def test_checkpoint_never_half_written(tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _cfg(tiny_root, tmp_path, method="ae_l2", **{"train.epochs": 1})
    T.train_run(cfg, progress=False)
    ckpt = Path(cfg.run_dir) / CHECKPOINT_NAME
    before = ckpt.read_bytes()
    real_save = torch.save

    def crash_midway(obj: object, f: object, *a: object, **k: object) -> None:
        Path(f).write_bytes(b"partial")  # a crash after writing some bytes
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        T.train_run(_cfg(tiny_root, tmp_path, method="ae_l2", **{"train.epochs": 2}), progress=False)
    monkeypatch.setattr(torch, "save", real_save)
    assert ckpt.read_bytes() == before  # old checkpoint intact
    assert [p for p in os.listdir(ckpt.parent) if p.endswith(".tmp")] == []  # no temp file left behind
    assert torch.load(ckpt, weights_only=False)["epoch"] == 1


def test_ctrl_c_saves_last_completed_epoch(tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import avaga_lib.models.autoencoder.method as B  # where the AE step calls its loss

    real = B.reconstruction_loss
    calls = {"n": 0}

    def interrupt(kind: str, x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 4:  # second batch of epoch 2
            raise KeyboardInterrupt
        return real(kind, x, recon)

    monkeypatch.setattr(B, "reconstruction_loss", interrupt)
    cfg = _cfg(tiny_root, tmp_path, method="ae_l2", **{"train.epochs": 3, "train.checkpoint_every": 10,
                                                       "train.batch_size": 2})
    with pytest.raises(TrainingInterrupted) as info:
        T.train_run(cfg, progress=False)
    assert isinstance(info.value, KeyboardInterrupt) and info.value.epoch == 1
    assert torch.load(Path(cfg.run_dir) / CHECKPOINT_NAME, weights_only=False)["epoch"] == 1
    monkeypatch.setattr(B, "reconstruction_loss", real)
    assert T.train_run(cfg, progress=False).resumed_from == 1


def test_amp_and_device_choices() -> None:
    assert R.amp_dtype("auto", torch.device("cpu")) is None
    assert R.amp_dtype("auto", torch.device("cuda")) is torch.bfloat16
    assert R.amp_dtype("off", torch.device("cuda")) is None
    with pytest.raises(ValueError, match="train.amp"):
        R.amp_dtype("fp8", torch.device("cpu"))
    assert R.resolve_device("cpu").type == "cpu"


def test_bf16_autocast_path_runs_on_cpu(tiny_root: Path, tmp_path: Path) -> None:
    # the trainer's autocast path (AVAGA's losses run their arithmetic outside autocast themselves); bf16
    # convolutions are slow on CPU, so the small SSIM autoencoder at 32 px
    cfg = _cfg(tiny_root, tmp_path, method="ae_ssim", **{"train.epochs": 1, "train.amp": "bf16", "data.image_size": 32})
    res = T.train_run(cfg, progress=False)
    assert res.history.shape[0] == 1
    assert all(math.isfinite(v) for v in res.history.iloc[0])


def test_splits_reused_when_given(tiny_root: Path, tmp_path: Path) -> None:
    cfg = _cfg(tiny_root, tmp_path, method="ae_l2", **{"train.epochs": 1})
    splits = make_splits(cfg.data, "unsupervised")
    res = T.train_run(cfg, splits=splits, progress=False)
    assert res.extra["n_train_normal"] == len(splits.train)
