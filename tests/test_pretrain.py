"""Issue 21: the offline initialisation arm (pretrain command, model.pretrained=<file>), the registry's arms and the
size remedy as its source describes it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.models import resnet18

from avaga_lib import cli, study
from avaga_lib.config import ModelConfig, make_config
from avaga_lib.data import generate_dataset
from avaga_lib.io import read_json
from avaga_lib.models.avaga import pretrain
from avaga_lib.models.avaga.attention import infer
from avaga_lib.models.avaga.model import build_model
from avaga_lib.models.networks import build_networks

SIDE = 64  # 2x2 latent grid: enough for shapes and loading, fast on a CPU


def test_torchvision_state_dict_loads_through_model_pretrained(tmp_path: Path) -> None:
    """(a) the file a user with internet access has: keys match, the first conv's weights are the file's."""
    ref = resnet18(weights=None).state_dict()  # random weights, torchvision's keys (fc included)
    path = tmp_path / "resnet18.pth"
    torch.save(ref, path)
    model, notes = build_model(ModelConfig(pretrained=str(path)), SIDE, "unsupervised")
    assert model.pretrained_source == str(path) and notes == []
    assert set(model.body.state_dict()) == {k for k in ref if not k.startswith("fc.")}
    assert torch.equal(model.body.conv1.weight, ref["conv1.weight"])


def test_wrong_keys_are_refused_naming_the_file(tmp_path: Path) -> None:
    """(c) a state dict that is not torchvision's ResNet-18 is refused, and the message names the file."""
    path = tmp_path / "not_resnet.pth"
    torch.save({"encoder.conv.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(ValueError, match="not_resnet.pth"):
        build_model(ModelConfig(pretrained=str(path)), SIDE, "unsupervised")


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    return generate_dataset(root, categories=["granite"], n_train=6, n_test_good=2, n_test_bad=2, size=SIDE)


def test_pretrain_command_writes_a_loadable_file_then_skips(tiny_root: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """(b) the command writes a torchvision-format state dict with its inputs beside it; the same call is cached."""
    out = tmp_path / "pre" / "r18.pth"
    argv = ["pretrain", "--dataset", "embedded", "--root", str(tiny_root), "--category", "granite",
            "--profile", "smoke", "--image-size", str(SIDE), "--epochs", "1", "--out", str(out)]
    assert cli.main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    state = torch.load(out, map_location="cpu", weights_only=True)
    assert set(state) == {k for k in resnet18(weights=None).state_dict() if not k.startswith("fc.")}
    record = read_json(pretrain.inputs_path(out))
    assert record["inputs"]["category"] == "granite" and record["inputs"]["epochs"] == 1
    model, _ = build_model(ModelConfig(pretrained=str(out)), SIDE, "unsupervised")
    assert torch.equal(model.body.conv1.weight, state["conv1.weight"])
    mtime = out.stat().st_mtime_ns
    assert cli.main(argv) == 0
    assert "already made from the same inputs" in capsys.readouterr().out and out.stat().st_mtime_ns == mtime
    assert cli.main([*argv[:-4], "--epochs", "2", "--out", str(out)]) == 0  # other inputs: made again
    assert read_json(pretrain.inputs_path(out))["inputs"]["epochs"] == 2


def test_selfsup_resolves_to_the_cached_file(tiny_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """model.pretrained=selfsup (the registry's arm) names the cached file of the run's own data: made on first use
    (stubbed here), then found by its inputs."""
    cfg = make_config("smoke", {"data.root": str(tiny_root), "data.category": "granite", "data.image_size": SIDE},
                      run="AVAGA-R_u-selfsup")
    made: list[Path] = []

    def fake_train(inputs: pretrain.PretrainInputs, data: object, progress: object) -> tuple[dict, float]:
        made.append(Path(inputs.root))
        return {k: v for k, v in resnet18(weights=None).state_dict().items() if not k.startswith("fc.")}, 0.0

    monkeypatch.setattr(pretrain, "_train", fake_train)
    monkeypatch.setattr(pretrain.paths, "data_dir", lambda: tiny_root.parent / "data")
    model, _, _ = build_networks(cfg)
    assert "resnet18-inpaint-64px-" in model.pretrained_source and len(made) == 1
    model2, _, _ = build_networks(cfg)
    assert model2.pretrained_source == model.pretrained_source and len(made) == 1  # cached


def test_arms_and_the_faithful_remedy_in_the_registry() -> None:
    assert study.ARMS == ("AVAGA-R_u-selfsup", "AVAGA-R_u-advoff", "AVAGA-R_u-size-faithful-selfsup")
    assert study.arms_of("AVAGA-R_u") == ("AVAGA-R_u-selfsup", "AVAGA-R_u-advoff")
    # the best remedy, pretrained alike
    assert study.arms_of("AVAGA-R_u-size-faithful") == ("AVAGA-R_u-size-faithful-selfsup",)
    size_arm = make_config("cpu", run="AVAGA-R_u-size-faithful-selfsup")
    assert size_arm.model.pretrained == pretrain.SELFSUP
    assert size_arm.loss == make_config("cpu", run="AVAGA-R_u-size-faithful").loss  # only the initialisation differs
    assert make_config("cpu", run="AVAGA-R_u-advoff").loss.w_adv == 0.0
    assert make_config("cpu", run="AVAGA-R_u-selfsup").model.pretrained == pretrain.SELFSUP
    # a hand run asking for no weights is still the recipe (the init is recorded, not part of the name)
    assert make_config("smoke", {"model.pretrained": "none"}).name == "AVAGA-R_u"
    faithful = make_config("cpu", run="AVAGA-R_u-size-faithful")
    assert faithful.loss.attention_constraint == "size_barrier" and faithful.loss.w_attn == 10.0
    assert faithful.model.test_map == "gradcam_minmax"
    literal = make_config("cpu", run="AVAGA-R_u-size")  # today's adaptation keeps its config (committed results)
    assert literal.loss.w_attn == 1e-2 and literal.model.test_map == "attention"
    assert "AVAGA-R_u-size-faithful" in study.remedies_of("AVAGA-R_u")
    with pytest.raises(ValueError, match="test_map"):  # refused before any work: the method's own rule
        build_networks(make_config("smoke", {"model.test_map": "gradcam_minmax", "train.setting": "weak", "name": "x"}))


def test_faithful_test_map_is_minmax_gradcam_high_anomalous() -> None:
    """The faithful remedy's test map: each image's map spans [0, 1], and it is the Grad-CAM's order (high values of
    ReLU(raw) are high anomaly), not 1 - A."""
    torch.manual_seed(0)
    cfg = make_config("cpu", run="AVAGA-R_u-size-faithful").model
    model, _ = build_model(replace_pretrained(cfg), 128, "unsupervised")
    x = torch.rand(3, 3, 128, 128)
    inf = infer(model, x, cfg, "unsupervised")
    flat = inf.amap.flatten(1)
    assert torch.allclose(flat.amin(1), torch.zeros(3)) and torch.allclose(flat.amax(1), torch.ones(3))
    # high = anomalous: the map rises where the attention A = sigmoid(raw) rises (1 - A would fall there)
    a = inf.attention.flatten(1)
    for i in range(3):
        hi, lo = a[i].argmax(), a[i].argmin()
        assert flat[i, hi] > flat[i, lo]
    literal = infer(model, x, make_config("cpu", run="AVAGA-R_u").model, "unsupervised")
    assert torch.allclose(literal.amap, 1 - literal.attention)


def replace_pretrained(cfg: ModelConfig) -> ModelConfig:
    """The config without pretrained weights (tests never read the hub cache)."""
    from dataclasses import replace

    return replace(cfg, pretrained="none")
