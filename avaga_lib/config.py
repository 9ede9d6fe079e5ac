"""Every choice of a run in one frozen dataclass tree, saved as ``config.json`` beside the results.

The paper's ambiguities (PROTOCOL_NOTES points 1-16) are resolved *here*, once: each field that answers one carries
the point number in its comment, and ``docs/PROTOCOL.md`` explains the choice. Profiles (``smoke``, ``paper``) are
dictionaries of overrides applied on top of the defaults; any field can be overridden with a dotted key
(``train.epochs=3``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

SETTINGS = ("unsupervised", "weak")
METHODS = ("avaga", "ae_l2", "ae_ssim")


@dataclass(frozen=True)
class DataConfig:
    """Which images, at which geometry, split how."""

    dataset: str = "embedded"  # embedded | mvtec | mtd | folder | stc
    root: str = ""  # dataset root in MVTec layout; "" = the dataset's default location (paths.py)
    category: str = "weave"  # MVTec category / embedded category / STC scene
    image_size: int = 64  # test side; train crops this side (PN 13: 256 at paper profile)
    train_resize_ratio: float = 1.125  # train: resize to image_size*1.125 then random crop (PN 13: 288 -> 256)
    rotation_deg: float = 15.0  # random rotation +-15 deg at train time (PN 13)
    val_fraction: float = 0.1  # normal-only calibration split of train/good (PN 8)
    weak_fraction: float = 0.02  # anomalous test images moved to training in the weak setting (PN 12)
    seed: int = 0  # seed of the splits (validation and weak), independent of the training seed


@dataclass(frozen=True)
class ModelConfig:
    """Networks of Table 9 and the ablation variants."""

    variant: str = "R"  # R: ResNet-18 encoder + residual decoder; D: DCGAN encoder/generator (Sec. 3)
    latent: str = "conv"  # conv: 8x8x512 latent at 256 px; flat: FC latent (Sec. 5 ablation)
    latent_channels: int = 512  # Table 9, layers 20-21
    flat_dim: int = 100  # Sec. 5: flat latent of dimension 100
    pretrained: str = "imagenet"  # imagenet | none | /path/to/resnet18.pth (PN 7); falls back to none + warning
    gradcam_layer: str = "features"  # features: encoder output before mu/logvar | z (PN 1)
    attention_norm: str = "sigmoid"  # sigmoid (instead of ReLU) | minmax | max | relu_sigmoid (literal) (PN 2)


@dataclass(frozen=True)
class LossConfig:
    """Weights of eq. 4 / eq. 6 and the ablation switches."""

    w_r: float = 1.0  # eq. 4/6
    w_kl: float = 1.0  # eq. 4/6
    w_adv: float = 1.0  # eq. 4/6
    w_attn: float = 1e-2  # eq. 4 (unsupervised guided attention)
    w_c: float = 1e-3  # eq. 6 (classifier BCE)
    w_a: float = 1e-2  # eq. 6 (weak guided attention)
    attention_loss: bool = True  # False = "w/o attention" ablation (Table 6/8 col. 1)
    adversarial_recon: bool = True  # False = "w/o adv. recons" ablation: classifier + L_a only (col. 4)
    sgb: bool = True  # False = "w/o SGB" ablation: L_a on every normal image (col. 5, PN 3)
    reduction: str = "mean"  # every term a mean per element and image (PN 5)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, hardware and checkpointing."""

    setting: str = "unsupervised"  # unsupervised (eq. 4) | weak (eq. 6)
    epochs: int = 3  # paper: 150 (A.1)
    batch_size: int = 16  # paper: 24 (A.1)
    lr: float = 1e-4  # A.1
    lr_step: int = 30  # lr x gamma every lr_step epochs (A.1)
    lr_gamma: float = 0.1  # A.1
    betas: tuple[float, float] = (0.5, 0.999)  # not in the paper; the usual GAN choice (recorded)
    seed: int = 0  # python / numpy / torch seed of training
    device: str = "auto"  # auto: cuda, then mps, then cpu
    amp: str = "auto"  # auto: bf16 autocast on cuda, off elsewhere | bf16 | off
    channels_last: bool = True  # only applied on cuda
    compile: bool = False  # torch.compile (off: does not pay for short runs)
    deterministic: bool = False  # torch.use_deterministic_algorithms (opt-in)
    checkpoint_every: int = 1  # epochs between atomic checkpoints
    resume: bool = True  # continue from the last checkpoint of the run folder
    nproc: int = 1  # DDP processes (torchrun); 1 = single process
    log_every: int = 1  # epochs between loss-CSV rows (always every epoch at 1)


@dataclass(frozen=True)
class EvalConfig:
    """How scores and maps become decisions and metrics."""

    threshold: float = 0.5  # detection and localization threshold (PN 16)
    score_calibration: str = "validation"  # validation (default, PN 8) | transductive (flagged, reported beside)
    aupro_max_fpr: float = 0.3  # PN 11, as MVTec's evaluation
    pixel_bins: int = 1000  # score bins of the streamed pixel ROC / PRO curves (memory bound, see metrics.py)
    thresholds_study: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6)  # Table 7


@dataclass(frozen=True)
class RunConfig:
    """One run: method x data x model x losses x training x evaluation."""

    method: str = "avaga"  # avaga | ae_l2 | ae_ssim (baselines, Bergmann et al. 2018)
    profile: str = "smoke"  # smoke | paper (the overrides that were applied)
    results_dir: str = "results/scratch"  # base of the results tree (pipeline passes "results")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    notes: tuple[str, ...] = ()  # fallbacks that happened (e.g. "pretrained weights unavailable"), recorded

    @property
    def setting_name(self) -> str:
        """Folder name of the run, e.g. ``AVAGA-R_u-seed0``, ``AVAGA-R_w-noSGB-seed1``, ``AE-SSIM-seed0``."""
        if self.method != "avaga":
            base = {"ae_l2": "AE-L2", "ae_ssim": "AE-SSIM"}[self.method]
        else:
            base = f"AVAGA-{self.model.variant}_{'u' if self.train.setting == 'unsupervised' else 'w'}"
            if self.model.latent == "flat":
                base += "-flat"
            if not self.loss.attention_loss:
                base += "-noattn"
            if not self.loss.adversarial_recon:
                base += "-noadv"
            if not self.loss.sgb and self.train.setting == "weak":
                base += "-noSGB"
        return f"{base}-seed{self.train.seed}"

    @property
    def run_dir(self) -> Path:
        """``<results_dir>/<dataset>/<category>/<setting_name>``."""
        return Path(self.results_dir) / self.data.dataset / self.data.category / self.setting_name

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return asdict(self)

    def save(self, path: Path | str) -> Path:
        """Write ``config.json`` (atomically) and return its path."""
        from avaga_lib.io import write_json

        return write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """Inverse of :meth:`to_dict` (unknown keys raise, so stale configs are noticed)."""
        return _from_dict(cls, d)

    @classmethod
    def load(cls, path: Path | str) -> RunConfig:
        """Read a ``config.json``."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    def with_note(self, note: str) -> RunConfig:
        """Return a copy with a fallback note recorded (no duplicates)."""
        return self if note in self.notes else replace(self, notes=(*self.notes, note))


def _from_dict(cls: type, d: dict[str, Any]) -> Any:
    kwargs: dict[str, Any] = {}
    known = {f.name: f for f in fields(cls)}
    for key, value in d.items():
        if key not in known:
            raise ValueError(f"unknown config key {cls.__name__}.{key}; known: {sorted(known)}")
        sub = _SUBCONFIGS.get((cls, key))
        if sub is not None and isinstance(value, dict):
            kwargs[key] = _from_dict(sub, value)
        elif isinstance(value, list):
            kwargs[key] = tuple(value)
        else:
            kwargs[key] = value
    return cls(**kwargs)


_SUBCONFIGS: dict[tuple[type, str], type] = {
    (RunConfig, "data"): DataConfig,
    (RunConfig, "model"): ModelConfig,
    (RunConfig, "loss"): LossConfig,
    (RunConfig, "train"): TrainConfig,
    (RunConfig, "eval"): EvalConfig,
}

# Profiles: overrides on top of the defaults. smoke = CPU-sized (a category in 1-2 min on 2 cores);
# paper = the protocol of the paper's Appendix A.1.
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {
        "data.image_size": 64,  # CPU-sized; latent 2x2 at 64 px
        "train.epochs": 3,
        "train.batch_size": 16,
        "train.lr": 2e-4,  # a few epochs only: a larger step than the paper's 1e-4
    },
    "paper": {
        "data.image_size": 256,  # A.1
        "train.epochs": 150,  # A.1
        "train.batch_size": 24,  # A.1
        "train.lr": 1e-4,  # A.1
        "train.lr_step": 30,  # A.1
        "train.lr_gamma": 0.1,  # A.1
    },
}


def apply_overrides(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Return ``cfg`` with dotted-key overrides applied (``{"train.epochs": 5, "method": "ae_l2"}``).

    Raises:
        ValueError: on an unknown key, naming it and the known ones.
    """
    for key, value in overrides.items():
        parts = key.split(".")
        cfg = _set(cfg, parts, value, key)
    return cfg


def _set(obj: Any, parts: list[str], value: Any, full_key: str) -> Any:
    names = {f.name for f in fields(obj)}
    if parts[0] not in names:
        raise ValueError(f"unknown config key '{full_key}' ({type(obj).__name__} has {sorted(names)})")
    if len(parts) == 1:
        current = getattr(obj, parts[0])
        if isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        return replace(obj, **{parts[0]: value})
    child = getattr(obj, parts[0])
    if not is_dataclass(child):
        raise ValueError(f"config key '{full_key}': '{parts[0]}' is not a section")
    return replace(obj, **{parts[0]: _set(child, parts[1:], value, full_key)})


def make_config(profile: str = "smoke", overrides: dict[str, Any] | None = None) -> RunConfig:
    """Build a run config from a profile plus overrides; the weak setting switches the classifier on implicitly.

    Args:
        profile: ``smoke`` or ``paper``.
        overrides: dotted keys, e.g. ``{"train.setting": "weak", "data.category": "bottle"}``.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile '{profile}'; choose one of {sorted(PROFILES)}")
    cfg = apply_overrides(RunConfig(profile=profile), PROFILES[profile])
    cfg = apply_overrides(cfg, overrides or {})
    validate(cfg)
    return cfg


def validate(cfg: RunConfig) -> None:
    """Reject impossible combinations with a message that says what to change."""
    if cfg.method not in METHODS:
        raise ValueError(f"method '{cfg.method}' unknown; choose one of {METHODS}")
    if cfg.train.setting not in SETTINGS:
        raise ValueError(f"train.setting '{cfg.train.setting}' unknown; choose one of {SETTINGS}")
    if cfg.data.image_size % 32 != 0:
        raise ValueError(f"data.image_size={cfg.data.image_size} must be a multiple of 32 (64, 128, 256)")
    if cfg.model.variant not in ("R", "D"):
        raise ValueError(f"model.variant '{cfg.model.variant}' unknown; choose R or D")
    if cfg.model.latent not in ("conv", "flat"):
        raise ValueError(f"model.latent '{cfg.model.latent}' unknown; choose conv or flat")
    if not cfg.loss.adversarial_recon and cfg.train.setting != "weak":
        raise ValueError("loss.adversarial_recon=False (classifier + L_a only) exists only for train.setting=weak")


def config_hash(cfg: RunConfig) -> str:
    """Short stable hash of a config (used to skip finished runs whose config is unchanged)."""
    import hashlib

    d = dataclasses.asdict(cfg)
    d.pop("notes", None)  # fallbacks recorded during a run are outcomes, not choices
    blob = json.dumps(d, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
