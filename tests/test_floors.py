"""Floors of localization (issue 26): image-only maps, the training-mean residual, the untrained network."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from avaga_lib.config import RunConfig, make_config
from avaga_lib.data import AnomalyDataset, make_splits
from avaga_lib.evaluation import floors as FL
from avaga_lib.evaluation.evaluate import infer_batch
from avaga_lib.training.train import train_run

_SIDE = 32  # the smallest side every network accepts (32x downsampling): fast, and mechanics do not need more


def _cfg(run: str, tmp: Path | None = None, **over: object) -> RunConfig:
    base: dict[str, object] = {"data.image_size": _SIDE, "model.pretrained": "none",  # never download in tests
                               "model.latent_channels": 32}  # small decoder: weights are compared, not trained
    if tmp is not None:
        base["results_dir"] = str(tmp)
    base.update(over)
    return make_config(profile="smoke", run=run, overrides=base)


def _bright_defect_batch(seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """uint8 (4,3,32,32) dark noisy images, each with a bright square (the defect) somewhere; the masks."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 120, (4, 3, _SIDE, _SIDE), generator=g, dtype=torch.uint8)
    masks = np.zeros((4, _SIDE, _SIDE), dtype=bool)
    for i, (r, c) in enumerate([(2, 3), (10, 20), (20, 5), (16, 16)]):
        images[i, :, r : r + 8, c : c + 8] = torch.randint(140, 256, (3, 8, 8), generator=g, dtype=torch.uint8)
        masks[i, r : r + 8, c : c + 8] = True
    return images, masks


def _states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)


def test_registry_reasons_and_uppers() -> None:
    assert set(FL.FLOOR_REASONS) == set(FL.FLOORS) == set(FL.FLOOR_UPPER)
    assert [FL.floor_upper(n, 2.0) for n in FL.FLOORS] == [1.0, 1.0, 1.0, 2.0]  # untrained: the method's own
    assert FL.floor_upper("floor_untrained", 1.0) == 1.0
    with pytest.raises(ValueError, match="unknown"):
        FL.floor_upper("floor_nope", 1.0)


def test_intensity_floor_ranks_a_bright_defect_first_and_its_inverse_last() -> None:
    images, masks = _bright_defect_batch()
    bright, dark = FL.intensity_map(images), FL.inverse_intensity_map(images)
    assert bright.dtype == dark.dtype == np.float32 and bright.shape == masks.shape
    assert bright.min() >= 0.0 and bright.max() <= 1.0
    np.testing.assert_allclose(bright + dark, 1.0, atol=1e-6)
    assert roc_auc_score(masks.ravel(), bright.ravel()) > 0.99
    assert roc_auc_score(masks.ravel(), dark.ravel()) < 0.01
    maps = FL.image_floor_maps(images, np.zeros((3, _SIDE, _SIDE), np.float32))
    assert list(maps) == list(FL.FLOORS[:3])
    np.testing.assert_array_equal(maps["floor_intensity"], bright)
    np.testing.assert_array_equal(maps["floor_intensity_inv"], dark)


def test_intensity_floor_rejects_float_images() -> None:
    with pytest.raises(ValueError, match="uint8"):
        FL.intensity_map(torch.rand(2, 3, 8, 8))


def test_train_residual_of_the_training_mean_is_zero() -> None:
    g = torch.Generator().manual_seed(1)
    low = torch.randint(0, 128, (1, 3, _SIDE, _SIDE), generator=g, dtype=torch.uint8)
    high = low + 2 * torch.randint(0, 64, (1, 3, _SIDE, _SIDE), generator=g, dtype=torch.uint8)  # integer mean
    acc = FL.TrainMean()
    acc.update(low)  # two batches: the mean does not depend on the batching
    acc.update(high)
    mean = acc.result()
    assert acc.n_images == 2 and mean.dtype == np.float32 and mean.shape == (3, _SIDE, _SIDE)
    mean_u8 = ((low.int() + high.int()) // 2).to(torch.uint8)  # the training mean as an image
    res = FL.train_residual_map(mean_u8, mean)
    assert res.dtype == np.float32 and res.shape == (1, _SIDE, _SIDE)
    assert np.array_equal(res, np.zeros_like(res))
    # away from the mean it is |x - m| over channels: low sits (high - low) / 2 below it
    expected = ((high.float() - low.float()) / 2 / 255).mean(dim=1).numpy()
    np.testing.assert_allclose(FL.train_residual_map(low, mean), expected, atol=1e-6)
    every_level = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(1, 3, 16, 16)
    acc = FL.TrainMean()
    acc.update(every_level)
    assert not FL.train_residual_map(every_level, acc.result()).any()  # exactly 0 at every uint8 level


def test_train_mean_needs_images_of_one_shape() -> None:
    acc = FL.TrainMean()
    with pytest.raises(ValueError, match="no training image"):
        acc.result()
    acc.update(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="shape"):
        acc.update(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match="differ"):
        FL.train_residual_map(torch.zeros(1, 3, 16, 16, dtype=torch.uint8), acc.result())


@pytest.mark.parametrize("run", ["AVAGA-R_u", "AE-SSIM"])
def test_untrained_model_is_the_trainers_step_zero(tiny_root: Path, tmp_path: Path, run: str) -> None:
    # train_run with 0 epochs returns the network exactly as its set-up built it, before any step
    cfg = _cfg(run, tmp_path, **{"data.root": str(tiny_root), "data.category": "weave", "train.epochs": 0})
    trainer = train_run(cfg, progress=False)
    assert trainer.epochs_done == 0
    ours = FL.untrained_model(cfg, "cpu")
    assert not ours.training
    assert _states_equal(ours, trainer.model)
    other = FL.untrained_model(_cfg(run, tmp_path, **{"train.seed": 1}), "cpu")
    assert not _states_equal(ours, other)


def test_untrained_model_keeps_the_callers_random_streams() -> None:
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    FL.untrained_model(_cfg("AE-L2"), "cpu")
    assert torch.equal(torch.rand(3), expected[0])
    assert (random.random(), np.random.rand()) == expected[1:]


@pytest.mark.parametrize("run", ["AVAGA-R_u", "AVAGA-R_w", "AE-L2", "AE-SSIM"])
def test_untrained_map_is_the_evaluators_map_of_the_untrained_network(run: str) -> None:
    cfg = _cfg(run)
    model = FL.untrained_model(cfg, "cpu")
    images, _ = _bright_defect_batch()

    def infer(m: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        return infer_batch(cfg, m, x, None).raw_map  # what the evaluator bins: AVAGA's map, baselines' raw residual

    amap = FL.untrained_map(cfg, model, images, "cpu", infer)
    assert amap.shape == (4, _SIDE, _SIDE) and amap.dtype == np.float32
    assert np.isfinite(amap).all()
    upper = 1.0 if cfg.method == "avaga" else 2.0  # evaluate's _ATTENTION_UPPER / _MAP_UPPER
    assert amap.min() >= 0.0 and amap.max() <= FL.floor_upper("floor_untrained", upper)
    with pytest.raises(ValueError, match="image_size"):
        FL.untrained_map(cfg, model, images[:, :, :16, :16], "cpu", infer)
    with pytest.raises(ValueError, match="shape"):
        FL.untrained_map(cfg, model, images, "cpu", lambda m, x: infer(m, x)[:, None])


def test_floor_map_fn_gives_every_floor_from_the_training_mean(tiny_root: Path) -> None:
    cfg = _cfg("AE-L2", **{"data.root": str(tiny_root), "data.category": "weave"})
    splits = make_splits(cfg.data, cfg.train.setting)
    mean = FL.train_mean_image(cfg, list(splits.train))
    train = AnomalyDataset(list(splits.train), _SIDE, train=False, has_masks=False, geometry=cfg.data.geometry)
    np.testing.assert_allclose(mean, train.images.double().mean(dim=0).numpy() / 255, atol=1e-6)
    model = FL.untrained_model(cfg, "cpu")
    def infer(m: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        return infer_batch(cfg, m, x, None).raw_map

    maps = FL.floor_map_fn(cfg, mean, model, "cpu", infer)(train.images)
    assert tuple(maps) == FL.FLOORS
    assert all(m.shape == (len(train), _SIDE, _SIDE) and m.dtype == np.float32 for m in maps.values())
    for name, m in maps.items():
        assert m.min() >= 0.0 and m.max() <= FL.floor_upper(name, 2.0)  # AE-L2: the evaluator's _MAP_UPPER
    np.testing.assert_array_equal(maps["floor_train_residual"], FL.train_residual_map(train.images, mean))
    np.testing.assert_array_equal(maps["floor_untrained"], FL.untrained_map(cfg, model, train.images, "cpu", infer))
