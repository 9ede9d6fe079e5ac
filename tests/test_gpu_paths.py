"""Issue 15: the CUDA paths checked without a GPU.

* fake CUDA: ``FakeTensorMode`` with fake ``cuda`` tensors and CUDA autocast switched on, so the installed torch's
  own CUDA autocast rules decide every dtype of one train step and one evaluation step (AVAGA-R_u, AVAGA-R_w,
  AE-L2, AE-SSIM). The autograd engine needs a real CUDA context for a backward on CUDA tensors, so the fake step
  replaces only the methods' ``update`` (backward + Adam) by a recorder; the backward itself runs in the bf16 CPU tests;
* forced bf16 autocast on CPU: evaluation maps against the float32 ones, SSIM and BCE saturation;
* resumption across a device-type change and with fewer visible GPUs (monkeypatched ``torch.cuda``);
* deterministic mode: the Grad-CAM upsampling has no non-deterministic backward, other ops warn;
* no host sync in a training step (a dispatch mode that fails on ``aten._local_scalar_dense``).
"""

from __future__ import annotations

import math
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

from avaga_lib.config import TrainConfig, make_config
from avaga_lib.data import generate_dataset
from avaga_lib.evaluation.evaluate import infer_batch
from avaga_lib.models import interface
from avaga_lib.models.autoencoder.model import reconstruction_loss, ssim_map
from avaga_lib.models.avaga import attention
from avaga_lib.models.avaga.losses import generator_objective
from avaga_lib.models.avaga.model import Discriminator, build_model
from avaga_lib.models.networks import build_networks
from avaga_lib.models.registry import METHODS
from avaga_lib.runtime import configure_precision, seed_everything
from avaga_lib.training import distributed as ddp
from avaga_lib.training import step
from avaga_lib.training.checkpoint import checkpoint_due, restore_rank_rng, rng_state
from avaga_lib.training.train import train_run

# each method's step calls the interface's update through its own module (where a test swaps it): every method of
# the registry, so a method added there is covered here without an edit
_UPDATES = tuple(sorted({f"{type(m).__module__}.update" for m in METHODS.values()}))

S = 64
RUNS = ("AVAGA-R_u", "AVAGA-R_w", "AE-L2", "AE-SSIM")


def _cfg(run: str, **over: Any):
    base = {"data.image_size": S, "model.pretrained": "none", "model.latent_channels": 32, "train.amp": "bf16"}
    return make_config("smoke", {**base, **over}, run=run)


# ------------------------------------------------------------------------------------------------- fake CUDA


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> FakeTensorMode:
    """Fake tensors on ``cuda`` (the precision flags a CUDA set-up changes are restored afterwards)."""
    precision = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    yield FakeTensorMode(allow_non_fake_inputs=False)
    torch.set_float32_matmul_precision(precision[0])
    torch.backends.cudnn.allow_tf32 = precision[1]


def _fake_nets(cfg, mode: FakeTensorMode) -> step.Nets:
    model, disc, _ = build_networks(cfg)  # real CPU weights, then fake copies on "cuda"
    with mode:
        for net in (model, disc):
            if net is not None:
                net._apply(lambda t: mode.from_tensor(t).to("cuda"))
    opt_g = torch.optim.Adam(model.parameters())
    opt_d = None if disc is None else torch.optim.Adam(disc.parameters())
    return step.make_nets(model, disc, opt_g, opt_d)


@pytest.mark.parametrize("run", RUNS)
def test_fake_cuda_step_and_evaluation_dtypes(run: str, fake_cuda: FakeTensorMode,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Under CUDA bf16 autocast (torch's real rules) the losses, the attention maps and the SSIM map are float32."""
    cfg = _cfg(run)
    seen: dict[str, torch.dtype] = {}
    real_gradcam, real_maps, real_ssim = attention.gradcam, attention.gradcam_maps, ssim_map

    def gradcam(*args: Any, **kwargs: Any) -> torch.Tensor:
        a = real_gradcam(*args, **kwargs)
        seen[f"attention_{args[2]}"] = a.dtype
        return a

    def gradcam_maps(*args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        a, raw = real_maps(*args, **kwargs)
        seen[f"attention_{args[2]}"] = a.dtype
        seen[f"raw_{args[2]}"] = raw.dtype  # the collapse diagnostics read it (issue 13)
        return a, raw

    def ssim(*args: Any, **kwargs: Any) -> torch.Tensor:
        s = real_ssim(*args, **kwargs)
        seen["ssim_map"] = s.dtype
        return s

    losses_seen: list[torch.dtype] = []
    monkeypatch.setattr("avaga_lib.models.avaga.losses.gradcam_maps", gradcam_maps)
    monkeypatch.setattr("avaga_lib.models.avaga.attention.gradcam", gradcam)
    monkeypatch.setattr("avaga_lib.models.autoencoder.model.ssim_map", ssim)
    for where in _UPDATES:  # backward: see docstring
        monkeypatch.setattr(where, lambda opt, loss: losses_seen.append(loss.dtype))
    nets = _fake_nets(cfg, fake_cuda)  # before the patches below (with them .to("cuda") would initialise CUDA)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # torch.autocast("cuda") checks these
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    with fake_cuda:
        x = torch.empty(2, 3, S, S, device="cuda").uniform_()  # fake: no values, only dtypes and shapes
        labels = torch.zeros(2, dtype=torch.int64, device="cuda")  # values do not exist in fake mode
        amp = torch.bfloat16
        with torch.autocast("cuda", dtype=amp):  # proof that the rules are CUDA's: a conv gives bf16 here
            assert F.conv2d(x, torch.empty(1, 3, 1, 1, device="cuda")).dtype == torch.bfloat16
        terms = step.train_step(cfg, nets, x, labels, amp)
        assert isinstance(x, FakeTensor) and x.device.type == "cuda"
        nets.model.eval()
        b = infer_batch(cfg, nets.model, x, None)
    assert losses_seen and set(losses_seen) == {torch.float32}
    assert {v.dtype for v in terms.values()} == {torch.float32}
    assert b.amap.dtype == b.raw_map.dtype == b.score_raw.dtype == b.recon.dtype == torch.float32
    if cfg.method == "avaga":
        expected = {"attention_latent"} if cfg.train.setting == "unsupervised" else {"attention_normal",
                                                                                    "attention_anomalous"}
        assert expected <= set(seen) and {seen[k] for k in expected} == {torch.float32}
        assert {v for k, v in seen.items() if k.startswith("raw_")} == {torch.float32}
    if run == "AE-SSIM":
        assert seen["ssim_map"] == torch.float32


# -------------------------------------------------------------------------------------- bf16 autocast on CPU


@pytest.mark.parametrize("run", ("AVAGA-R_u", "AVAGA-R_w"))
def test_bf16_evaluation_gradcam_equals_float32(run: str) -> None:
    """Grad-CAM under bf16 autocast = the float32 Grad-CAM of the same forward output; maps close to fp32 ones."""
    torch.manual_seed(0)
    cfg = _cfg(run)
    model, _, _ = build_networks(cfg)
    model.eval()
    x = torch.rand(2, 3, S, S)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        assert out.features.dtype == torch.bfloat16  # the forward did run in bf16
        target = "latent" if cfg.train.setting == "unsupervised" else "anomalous"
        a_amp = attention.gradcam(model, out, target, cfg.model, S)
    with torch.no_grad():
        a_fp32 = attention.gradcam(model, out, target, cfg.model, S)
    assert a_amp.dtype == torch.float32 and torch.equal(a_amp, a_fp32)
    b16 = infer_batch(cfg, model, x, None)  # train.amp=bf16: autocast on CPU
    b32 = infer_batch(_cfg(run, **{"train.amp": "off"}), model, x, None)
    assert b16.amap.dtype == torch.float32 and b16.score_raw.dtype == torch.float32
    assert (b16.amap - b32.amap).abs().max() < 0.05  # differs only through the bf16 encoder features
    assert (b16.score_raw - b32.score_raw).abs().max() < 0.02


def test_ssim_under_bf16_autocast_is_float32() -> None:
    """The SSIM map and loss ignore the caller's autocast: equal to the float32 values, inside [-1, 1]."""
    g = torch.Generator().manual_seed(0)
    x = 0.7 + 0.2 * torch.rand(2, 3, 32, 32, generator=g)  # bright images: the bf16 cancellation case
    y = (x + 0.05 * torch.randn(2, 3, 32, 32, generator=g)).clamp(0, 1)
    ref, ref_loss = ssim_map(x, y), reconstruction_loss("ssim", x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, loss = ssim_map(x, y), reconstruction_loss("ssim", x, y)
    assert got.dtype == loss.dtype == torch.float32
    assert torch.equal(got, ref) and torch.equal(loss, ref_loss)
    assert float(got.min()) >= -1.0 and float(got.max()) <= 1.0


def test_reconstruction_bce_reads_logits_not_saturated_probabilities() -> None:
    """Logits >= 6.3 saturate a bf16 sigmoid at 1.0; eq. 1 on the logits keeps the loss and its gradient."""
    model, _ = build_model(_cfg("AVAGA-R_u").model, 32, "unsupervised")
    with torch.no_grad():
        model.decoder.out.bias.fill_(8.0)  # bright reconstructions: every logit about 8
    x = torch.full((2, 3, 32, 32), 0.5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        assert torch.sigmoid(out.recon_logits).max() == 1.0  # what a bf16 sigmoid returned before the fix
        total, logs, out = generator_objective(model, Discriminator(32), x, None, _cfg("AVAGA-R_u").loss,
                                               _cfg("AVAGA-R_u").model, "unsupervised")
    assert out.recon.dtype == torch.float32 and float(out.recon.max()) < 1.0
    expect = F.binary_cross_entropy_with_logits(out.recon_logits.float(), x)
    assert math.isclose(float(logs["recon"]), float(expect), rel_tol=1e-5) and float(logs["recon"]) < 10
    total.backward()
    assert float(model.decoder.out.bias.grad.abs().sum()) > 0


# ---------------------------------------------------------------------------------------------- host syncs


class _NoHostSync(TorchDispatchMode):
    """Fails on ``aten._local_scalar_dense`` (what .item(), .tolist(), float() and bool() of a tensor call)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        if func is torch.ops.aten._local_scalar_dense.default:
            raise AssertionError("host sync (.item / .tolist / float) inside the training step")
        return func(*args, **(kwargs or {}))


def _unwatched(fn: Any) -> Any:
    with _disable_current_modes():
        return fn()



@pytest.mark.parametrize("run", ("AVAGA-R_u", "AVAGA-R_w", "AE-SSIM"))
def test_train_step_reads_nothing_back_to_the_host(run: str) -> None:
    cfg = _cfg(run, **{"data.image_size": 32, "train.amp": "off"})
    model, disc, _ = build_networks(cfg)
    opt_d = None if disc is None else torch.optim.Adam(disc.parameters())
    nets = step.make_nets(model, disc, torch.optim.Adam(model.parameters()), opt_d)
    x, labels = torch.rand(2, 3, 32, 32), torch.tensor([0, 1])
    real_update = interface.update

    def update(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        # Adam reads its step counter with .item(): a CPU tensor (not capturable), so no device sync on CUDA either
        real_step = opt.step
        opt.step = lambda: _unwatched(real_step)  # type: ignore[method-assign]
        try:
            real_update(opt, loss)
        finally:
            del opt.step

    with _NoHostSync(), pytest.MonkeyPatch.context() as mp:
        for where in _UPDATES:
            mp.setattr(where, update)
        terms = step.train_step(cfg, nets, x, labels, None)
    assert terms and all(isinstance(v, torch.Tensor) and v.ndim == 0 for v in terms.values())


# --------------------------------------------------------------------------------------- deterministic mode


def test_deterministic_mode_upsample_and_warn_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Grad-CAM's upsampling never calls F.interpolate (whose CUDA backward raises in deterministic mode); it equals
    it; and deterministic mode warns, not raises, on an op without a deterministic kernel."""
    was = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    a = torch.rand(2, 1, 2, 2, requires_grad=True)
    ref = F.interpolate(a, size=(64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(attention.bilinear_upsample(a, 64), ref, atol=1e-6, rtol=0)
    try:
        seed_everything(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()

        def cuda_like(*args: Any, **kwargs: Any) -> torch.Tensor:
            raise RuntimeError("upsample_bilinear2d_backward_out_cuda does not have a deterministic implementation")

        monkeypatch.setattr(attention.F, "interpolate", cuda_like)
        cfg = _cfg("AVAGA-R_u", **{"data.image_size": 32, "train.amp": "off"})
        model, disc, _ = build_networks(cfg)
        total, _, _ = generator_objective(model, disc, torch.rand(2, 3, 32, 32), None, cfg.loss, cfg.model,
                                          "unsupervised")
        total.backward()  # through the Grad-CAM upsampling
        with pytest.warns(UserWarning, match="does not have a deterministic implementation"):
            torch.zeros(4).put_(torch.tensor([0, 0]), torch.tensor([1.0, 2.0]))  # stands for a CUDA-only one
    finally:
        torch.use_deterministic_algorithms(was[0], warn_only=was[1])
        torch.backends.cudnn.deterministic = False


def test_configure_precision_is_the_one_switch() -> None:
    before = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    try:
        assert configure_precision("cpu") == {"tf32": before[0] != "highest", "matmul_precision": before[0]}
        assert configure_precision("cuda")["tf32"] is True  # flags only: no CUDA call
        assert torch.get_float32_matmul_precision() == "high" and torch.backends.cudnn.allow_tf32
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cudnn.allow_tf32 = before[1]


# ------------------------------------------------------------------------------------------------ resumption


class _FakeCudaRng:
    """``torch.cuda`` RNG functions of a machine with ``n`` GPUs (CPU generators stand in for the devices)."""

    def __init__(self, n: int) -> None:
        self.gens = [torch.Generator().manual_seed(100 + i) for i in range(n)]
        self.seeded: list[int] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(torch.cuda, "device_count", lambda: len(self.gens))
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "get_rng_state", lambda d=None: self.gens[_index(d)].get_state())
        monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, d=None: self.gens[_index(d)].set_state(s))
        monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: self.seeded.append(seed))


def _index(device: Any) -> int:
    index = torch.device(device).index if device is not None else 0
    return 0 if index is None else index


class _CudaGenerator:
    """Stands in for a ``torch.Generator(device="cuda")``: reports cuda, takes 16-byte (philox) states only."""

    device = torch.device("cuda")

    def __init__(self) -> None:
        self.g = torch.Generator().manual_seed(1)

    def get_state(self) -> torch.Tensor:
        return self.g.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        if state.numel() != 16:
            raise RuntimeError("RNG state is wrong size")
        self.state16 = state

    def manual_seed(self, seed: int) -> _CudaGenerator:
        self.g.manual_seed(seed)
        return self


def _gens(device: str) -> dict[str, Any]:
    augment = _CudaGenerator() if device == "cuda" else torch.Generator().manual_seed(1)
    return {"sampler": torch.Generator().manual_seed(0), "augment": augment}


def test_resume_cpu_checkpoint_on_cuda_reseeds_with_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    saved = [rng_state(_gens("cpu"), torch.device("cpu"))]  # a CPU run's checkpoint
    fake = _FakeCudaRng(1)
    fake.install(monkeypatch)
    gens = _gens("cuda")
    notes = restore_rank_rng(saved, gens, torch.device("cuda", 0), rank=0, reseed=77)
    assert any("'augment'" in n and "reseeded from 79" in n for n in notes)  # no 5056-byte state in a CUDA gen
    assert any("cuda:0" in n and "reseeded from 77" in n for n in notes) and fake.seeded == [77]
    assert not any("'sampler'" in n for n in notes)  # the CPU sampler continues exactly
    torch.testing.assert_close(gens["sampler"].get_state(), saved[0]["generators"]["sampler"]["state"])


def test_resume_cuda_checkpoint_on_cpu_and_legacy_eight_gpu_states(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeCudaRng(8)
    fake.install(monkeypatch)
    cuda_gens = _gens("cuda")
    cuda_gens["augment"].get_state = lambda: torch.zeros(16, dtype=torch.uint8)  # a 16-byte "philox" state
    saved = rng_state(cuda_gens, torch.device("cuda", 0))
    assert saved["generators"]["augment"]["device"] == "cuda" and saved["device"]["type"] == "cuda"
    notes = restore_rank_rng([saved], _gens("cpu"), torch.device("cpu"), rank=0, reseed=5)
    assert len(notes) == 1 and "'augment'" in notes[0] and "saved on cuda" in notes[0]
    # a pre-issue-15 checkpoint written with 8 visible GPUs, resumed with 1: its own device's state, no IndexError
    legacy = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
              "cuda": [g.get_state() for g in fake.gens], "sampler": torch.Generator().get_state(),
              "augment": torch.zeros(16, dtype=torch.uint8)}
    one = _FakeCudaRng(1)
    one.install(monkeypatch)
    assert restore_rank_rng(legacy, _gens("cuda"), torch.device("cuda"), rank=0, reseed=5) == []
    torch.testing.assert_close(one.gens[0].get_state(), fake.gens[0].get_state())


def test_per_rank_states_each_rank_restores_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rank r restores rank r's states (row 5); a rank the checkpoint has no entry for is reseeded with a note."""
    per_rank = []
    for r in range(2):
        torch.manual_seed(ddp.rank_seed(0, r))
        per_rank.append(rng_state({"augment": torch.Generator().manual_seed(ddp.rank_seed(0, r) + 1)},
                                  torch.device("cpu")))
    g = {"augment": torch.Generator()}
    assert restore_rank_rng(per_rank, g, torch.device("cpu"), rank=1, reseed=9) == []
    torch.testing.assert_close(g["augment"].get_state(), per_rank[1]["generators"]["augment"]["state"])
    torch.testing.assert_close(torch.get_rng_state(), per_rank[1]["torch"])
    notes = restore_rank_rng(per_rank, g, torch.device("cpu"), rank=2, reseed=9)
    assert len(notes) == 1 and "rank 2" in notes[0]
    assert ddp.rank_seed(7, 0) == 7 and len({ddp.rank_seed(7, r) for r in range(8)}) == 8  # rank 0 unchanged


# ------------------------------------------------------------------------------------------- DDP and cadence


def test_sync_batchnorm_on_nccl_only() -> None:
    disc = Discriminator(32)
    bn_params = {id(p) for m in disc.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()}
    same, converted = ddp.use_sync_batchnorm(disc, ddp.DistContext(world_size=2, backend="gloo"))
    assert not converted and same is disc
    keys = set(disc.state_dict())
    synced, converted = ddp.use_sync_batchnorm(disc, ddp.DistContext(world_size=2, backend="nccl"))
    sync_layers = [m for m in synced.modules() if isinstance(m, torch.nn.SyncBatchNorm)]
    assert converted and len(sync_layers) == 3 and set(synced.state_dict()) == keys  # checkpoints unchanged
    assert {id(p) for m in sync_layers for p in m.parameters()} == bn_params  # optimisers stay valid


def test_checkpoint_cadence_by_wall_time_on_cuda_only() -> None:
    tc = TrainConfig(epochs=100, checkpoint_every=1, checkpoint_minutes=10.0)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert checkpoint_due(3, tc, cpu, seconds_since_last=0.1)  # CPU: every epoch, as before
    assert not checkpoint_due(3, tc, cuda, seconds_since_last=599.0)
    assert checkpoint_due(3, tc, cuda, seconds_since_last=600.0)
    assert checkpoint_due(100, tc, cuda, seconds_since_last=0.1)  # always after the last epoch
    every = TrainConfig(epochs=100, checkpoint_minutes=0.0)
    assert checkpoint_due(3, every, cuda, seconds_since_last=0.1)


def test_trainer_resumes_a_cpu_checkpoint_with_a_tagged_rng(tmp_path: Path) -> None:
    """The checkpoint holds one tagged RNG entry per rank (a single process: one)."""
    root = generate_dataset(tmp_path / "embedded", categories=["weave"], n_train=4, n_test_good=2, n_test_bad=2,
                            size=32)
    cfg = make_config("smoke", {"data.root": str(root), "data.category": "weave", "data.image_size": 32,
                                "data.val_fraction": 0.25, "train.epochs": 1, "train.batch_size": 4,
                                "results_dir": str(tmp_path / "r")}, run="AE-L2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = train_run(cfg, progress=False)
    ck = torch.load(res.checkpoint, weights_only=False)
    assert isinstance(ck["rng"], list) and len(ck["rng"]) == 1
    assert ck["rng"][0]["generators"]["augment"]["device"] == "cpu" and ck["rng"][0]["device"]["type"] == "cpu"
