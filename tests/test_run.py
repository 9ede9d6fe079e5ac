"""run_one: splits + training + evaluation + the run folder of the results contract (notes in metrics.json)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from avaga_lib.config import RunConfig, make_config
from avaga_lib.data import generate_dataset
from avaga_lib.evaluation.calibration import load_calibration
from avaga_lib.evaluation.evaluate import EvalResult
from avaga_lib.io import write_json
from avaga_lib.run_folder import MAPS_NAME
from avaga_lib.training import run as run_module
from avaga_lib.training.run import config_dict, load_maps, run_notes, run_one, save_run

CONTRACT_KEYS = {
    "iou", "iou_pooled", "mean_accuracy", "image_auroc", "image_auroc_classifier", "pixel_auroc", "aupro",
    "fp_area_normal", "mean_accuracy_transductive", "iou_at", "n_test", "n_anomalous", "wall_time_s",
    "pixel_metrics_available", "notes",
}


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("emb")
    return generate_dataset(root / "embedded", categories=["weave"], n_train=6, n_test_good=4, n_test_bad=4, size=64)


def test_run_one_writes_run_folder(tiny_root: Path, tmp_path: Path) -> None:
    cfg = make_config("smoke", {"data.root": str(tiny_root), "data.category": "weave", "data.image_size": 64,
                                "data.val_fraction": 0.2, "method": "ae_ssim", "train.batch_size": 4,
                                "train.epochs": 1, "results_dir": str(tmp_path)})
    run_dir = run_one(cfg, progress=False)
    assert run_dir == cfg.run_dir
    for name in ("config.json", "metrics.json", "predictions.csv", "losses.csv", "calibration.json", "splits.json",
                 "checkpoint.pt", "fig_losses.png", "fig_scores.png", "fig_qualitative.png", MAPS_NAME):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert CONTRACT_KEYS <= set(metrics)
    assert metrics["image_auroc_classifier"] is None  # NaN -> null
    assert "transductive" in metrics["transductive_flag"]
    assert any(n.startswith("pretrained_source=") for n in metrics["notes"])  # notes are a run outcome
    saved = json.loads((run_dir / "config.json").read_text())
    assert "notes" not in saved  # config.json holds the config only
    conf = RunConfig.load(run_dir / "config.json")  # loadable: every choice
    assert conf.method == "ae_ssim" and conf.run_id == cfg.run_id
    assert load_calibration(run_dir).source == "validation"
    maps = load_maps(run_dir)
    assert maps["maps"].shape == (metrics["n_test"], 64, 64) and "raw_maps" in maps and "edges_map" in maps
    # the machine, beside the device (issue 22): bit-identical numbers hold per torch version and CPU capability
    keys = list(metrics)
    assert keys[keys.index("device") + 1 : keys.index("device") + 3] == ["torch_version", "cpu_capability"]
    assert metrics["torch_version"] == torch.__version__
    assert metrics["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    # portable records: image paths relative to the dataset root
    paths = pd.read_csv(run_dir / "predictions.csv")["path"]
    assert all(not Path(p).is_absolute() and (tiny_root / p).is_file() for p in paths)


class _Trained:
    """Stand-in for a TrainResult: only what run_notes reads."""

    notes = ["pretrained weights unavailable: random init", "resumed from epoch 1"]
    model = type("M", (), {"pretrained_source": "none"})()


def test_run_notes_and_config_dict() -> None:
    cfg = make_config("smoke")
    notes = run_notes(cfg, _Trained())
    assert notes == [*_Trained.notes, "pretrained_source=none"]
    assert run_notes(cfg, None) == list(getattr(cfg, "notes", ()))
    assert "notes" not in config_dict(cfg) and config_dict(cfg)["method"] == cfg.method


class _Calibration:
    def to_dict(self) -> dict[str, str]:
        return {"source": "test"}


def _killed(*_args: object, **_kwargs: object) -> None:
    raise KeyboardInterrupt("killed while drawing the figures")


def test_metrics_json_is_written_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 22: metrics.json (the finished marker) came before calibration, predictions, maps and figures, so a
    kill in between left a run counted finished but incomplete."""
    cfg = make_config("smoke", {"results_dir": str(tmp_path)})
    root = tmp_path / "data"
    write_json(cfg.run_dir / "splits.json", {"root": str(root)})  # make_splits writes it first in a real run
    predictions = pd.DataFrame({"path": [str(root / "weave" / "test" / "good" / "000.png")], "label": [0],
                                "score": [0.1]})
    result = EvalResult({"iou": 0.5}, predictions, _Calibration(), maps={"maps": np.zeros((1, 2, 2), np.float32)})
    monkeypatch.setattr(run_module, "_save_figures", _killed)
    with pytest.raises(KeyboardInterrupt):
        save_run(cfg, None, result)
    assert not (cfg.run_dir / "metrics.json").exists()  # not counted finished
    for name in ("config.json", "calibration.json", "predictions.csv", MAPS_NAME):
        assert (cfg.run_dir / name).is_file(), name
    out = save_run(cfg, None, result, figures=False)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["iou"] == 0.5 and {"torch_version", "cpu_capability"} <= set(metrics)
    assert pd.read_csv(out / "predictions.csv")["path"].tolist() == ["weave/test/good/000.png"]
    with pytest.raises(KeyboardInterrupt):  # a second save killed halfway: its files are a mix of two saves
        save_run(cfg, None, result)
    assert not (cfg.run_dir / "metrics.json").exists()  # so the old marker does not vouch for them
