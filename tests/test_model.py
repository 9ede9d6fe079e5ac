"""Networks of Table 9: every output shape at 256 px, other sides, weights loading (PN 7), discriminator (PN 6)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from avaga_lib.config import ModelConfig
from avaga_lib.models.avaga.architecture import architecture_table, table9_expected
from avaga_lib.models.avaga.model import AVAGA, NOTE_NO_PRETRAINED, Discriminator, build_model

NO_PRETRAIN = ModelConfig(pretrained="none")


def test_table9_shapes_at_256() -> None:
    """Every Table 9 row (encoder, W.S. head, decoder incl. skips, discriminator) has the paper's output shape."""
    with torch.device("meta"):  # shapes only: no compute, no memory
        model = AVAGA(NO_PRETRAIN, 256, classifier=True)
        disc = Discriminator(256)
    table = architecture_table(model, 256)
    dtable = architecture_table(disc, 256)
    expected = table9_expected(256)
    seen = set(table["module"]) | set(dtable["module"])
    assert set(expected) <= seen, f"Table 9 rows without a module: {set(expected) - seen}"
    for frame in (table, dtable):
        checked = frame[frame["table9_shape"].notna()]
        bad = checked[~checked["match"].astype(bool)]
        assert bad.empty, bad.to_string()
    assert expected["avaga.mu"][1] == (512, 8, 8)  # the 8x8x512 latent of Table 9
    assert expected["disc.sigmoid"][1] == (512, 8, 8)  # patch output (PN 6)
    assert expected["avaga.classifier.flatten"][1] == (32768,)


@pytest.mark.parametrize("variant", ["R", "D"])
@pytest.mark.parametrize("latent", ["conv", "flat"])
@pytest.mark.parametrize("size", [64, 128])
def test_any_multiple_of_32(variant: str, latent: str, size: int) -> None:
    model, _ = build_model(ModelConfig(variant=variant, latent=latent, pretrained="none"), size, "weak")
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, size, size))
    s = size // 32
    assert out.features.shape == (2, 512, s, s)
    assert out.recon.shape == (2, 3, size, size)
    assert out.mu.shape == ((2, 512, s, s) if latent == "conv" else (2, 100))
    assert out.logits is not None and out.logits.shape == (2, 2)
    assert 0.0 <= float(out.recon.min()) and float(out.recon.max()) <= 1.0
    assert Discriminator(size)(torch.rand(2, 3, size, size)).shape == (2,)


def test_bad_side_rejected() -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        AVAGA(NO_PRETRAIN, 100, classifier=False)


def test_reparameterisation_train_vs_eval() -> None:
    model, _ = build_model(NO_PRETRAIN, 64, "unsupervised")
    assert model.classifier is None
    x = torch.rand(2, 3, 64, 64)
    model.train()
    out = model(x)
    assert not torch.equal(out.z, out.mu)
    model.eval()
    out = model(x)
    assert out.z is out.mu and out.logits is None


def _fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    return hub


def test_imagenet_missing_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_hub(tmp_path, monkeypatch)
    with pytest.warns(UserWarning, match="random init"):
        model, notes = build_model(ModelConfig(pretrained="imagenet"), 64, "unsupervised")
    assert notes == [NOTE_NO_PRETRAINED]
    assert model.pretrained_source == "none"


def test_imagenet_from_hub_cache_and_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision.models import resnet18

    hub = _fake_hub(tmp_path, monkeypatch)
    ref = resnet18(weights=None).state_dict()
    (hub / "checkpoints").mkdir(parents=True)
    torch.save(ref, hub / "checkpoints" / "resnet18-f37072fd.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning expected
        model, notes = build_model(ModelConfig(pretrained="imagenet"), 64, "unsupervised")
    assert notes == [] and model.pretrained_source == "imagenet"
    assert torch.equal(model.body.conv1.weight, ref["conv1.weight"])
    path = tmp_path / "r18.pth"
    torch.save(ref, path)
    model, notes = build_model(ModelConfig(pretrained=str(path)), 64, "unsupervised")
    assert model.pretrained_source == str(path) and notes == []
    assert torch.equal(model.body.layer4[1].conv2.weight, ref["layer4.1.conv2.weight"])


def test_pretrained_path_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        build_model(ModelConfig(pretrained=str(missing)), 64, "unsupervised")
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth"):
        build_model(ModelConfig(pretrained=str(junk)), 64, "unsupervised")


def test_dcgan_variant_records_random_init() -> None:
    model, notes = build_model(ModelConfig(variant="D"), 64, "unsupervised")
    assert model.pretrained_source == "none" and any("Celeb-A" in n for n in notes)


def test_discriminator_probability_is_mean_of_patches() -> None:
    disc = Discriminator(64).eval()
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        p = disc(x)
        logits = disc(x, logits=True)
    assert logits.shape == (3, 512, 2, 2)
    assert torch.allclose(p, torch.sigmoid(logits).flatten(1).mean(1))
    assert bool(((p > 0) & (p < 1)).all())
