"""Every choice of a run in one frozen dataclass tree, saved as ``config.json`` beside the results.

The paper's ambiguities (PROTOCOL_NOTES points 1-16) are resolved *here*, once: each field that answers one carries
the point number in its comment, and ``docs/PROTOCOL.md`` explains the choice. Profiles (``smoke``, ``paper``) are
dictionaries of overrides applied on top of the defaults; any field can be overridden with a dotted key
(``train.epochs=5``).

Run names: ``RunConfig.name`` is the run's entry of the study registry (:mod:`avaga_lib.study`) and gives the run
folder ``<name>-seed<k>``. :func:`make_config` sets it: from ``run=`` (the entry's overrides are applied first), from
an explicit ``name`` override, or else from the one entry whose overrides the config matches on every key that tells
the runs apart (:func:`avaga_lib.study.identity_keys`); a config that matches no entry needs an explicit ``name``.
The name is never parsed back from a folder.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from avaga_lib import study
from avaga_lib.io import write_json

# Allowed values of the string options, checked in one place (:func:`validate`); other modules import them.
SETTINGS: tuple[str, ...] = ("unsupervised", "weak")
METHODS: tuple[str, ...] = ("avaga", "ae_l2", "ae_ssim")
DATASETS: tuple[str, ...] = ("embedded", "mvtec", "mtd", "folder", "stc")
VARIANTS: tuple[str, ...] = ("R", "D")
LATENTS: tuple[str, ...] = ("conv", "flat")
GRADCAM_LAYERS: tuple[str, ...] = ("features", "z")
ATTENTION_NORMALIZATIONS: tuple[str, ...] = ("sigmoid", "minmax", "max", "relu_sigmoid", "gain")
ATTENTION_CONSTRAINTS: tuple[str, ...] = ("literal", "size_barrier")  # eq. 3 as written | mean(A) >= 1 - p
TEST_MAPS: tuple[str, ...] = ("attention", "gradcam_minmax")  # the paper's 1 - A | the size remedy's source's map
AMP_MODES: tuple[str, ...] = ("auto", "bf16", "off")
GEOMETRIES: tuple[str, ...] = ("squash", "letterbox", "reflect")  # how a non-square image becomes the square input


@dataclass(frozen=True)
class DataConfig:
    """Which images, at which geometry, split how."""

    dataset: str = "embedded"  # embedded | mvtec | mtd | folder | stc
    root: str = ""  # dataset root in MVTec layout; "" = the dataset's default location (paths.py)
    category: str = "weave"  # MVTec category / embedded category / STC scene
    image_size: int = 64  # test side; train crops this side (PN 13: 256 at paper profile)
    geometry: str = "squash"  # squash: resize to a square (aspect lost) | letterbox: longer side to the square,
    # padded with 0 | reflect: as letterbox, padded with the image's mirror (no false edge); padding excluded from
    # every pixel metric (docs/PROTOCOL.md, "Image geometry")
    train_resize_ratio: float = 1.125  # train: resize to image_size*1.125 then random crop (PN 13: 288 -> 256)
    rotation_deg: float = 15.0  # random rotation +-15 deg at train time (PN 13)
    val_fraction: float = 0.2  # normal-only calibration split of train/good (PN 8); issue 20: 0.1 left 8
    # embedded validation images, too few for a stable quantile threshold
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
    # | selfsup: the encoder pretrained offline by `avaga_lib.cli pretrain` on this run's data (issue 21, a proxy
    # for ImageNet, not ImageNet; docs/PROTOCOL.md "7. Pretraining")
    gradcam_layer: str = "features"  # features: encoder output before mu/logvar | z (PN 1)
    attention_norm: str = "sigmoid"  # sigmoid (instead of ReLU) | minmax | max | relu_sigmoid (literal) (PN 2)
    # | gain: the remedy sigmoid(w (minmax(ReLU(raw)) - s)) (issue 13, docs/PROTOCOL.md "Remedies")
    gain_scale: float = 10.0  # w of the gain mask: the slope of the soft threshold (GAIN's sigma; issue 13's probe)
    gain_offset: float = 0.5  # s of the gain mask: the min-max level mapped to A = 0.5 (GAIN's threshold)
    test_map: str = "attention"  # the unsupervised test map: attention = 1 - A (eq. 3's reading, PN 2) |
    # gradcam_minmax = the per-image min-max of the upsampled ReLU(Grad-CAM), high = anomalous: the map of
    # Silva-Rodriguez et al. (BMVC 2021), the size remedy's source (issue 21; docs/PROTOCOL.md "Remedies")


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
    attention_constraint: str = "literal"  # literal: eq. 3's mean(1 - A) | size_barrier: the remedy mean(A) >= 1 - p
    # through the extended log-barrier (Silva-Rodriguez et al. 2021; docs/PROTOCOL.md "Remedies")
    size_p: float = 0.2  # p: the fraction of a normal image the attention may leave out (their p_activation_cam)
    barrier_t: float = 25.0  # t of the extended log-barrier (their default t)


# Smoke epochs, defined here only (the profile, params/smoke.yaml and notebooks 03/04 all read it): a pipeline check,
# not a result; 2 epochs measured 17.5 CPU-min for the 24 smoke runs, too close to 15 min on 2 cores.
SMOKE_EPOCHS = 1


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, hardware and checkpointing."""

    setting: str = "unsupervised"  # unsupervised (eq. 4) | weak (eq. 6)
    epochs: int = SMOKE_EPOCHS  # the smoke profile's; paper: 150 (A.1)
    batch_size: int = 16  # paper: 24 (A.1)
    lr: float = 1e-4  # A.1
    lr_step: int = 30  # lr x gamma every lr_step epochs (A.1)
    lr_gamma: float = 0.1  # A.1
    betas: tuple[float, float] = (0.5, 0.999)  # not in the paper; the usual GAN choice (recorded)
    seed: int = 0  # python / numpy / torch seed of training
    device: str = "auto"  # auto: cuda, then mps, then cpu
    amp: str = "auto"  # auto: bf16 autocast on cuda, off elsewhere | bf16 | off
    channels_last: bool = True  # only applied on cuda
    deterministic: bool = False  # torch.use_deterministic_algorithms (opt-in)
    threads: int = 0  # CPU intra-op threads (torch.set_num_threads); 0 = torch's default. CPU float sums depend on
    # the thread count, so a CPU run is bit-reproducible only at a fixed count (issue 12: 1 vs 2 threads moved an
    # AVAGA pixel AUROC from 0.518 to 0.548); the smoke profile fixes it at 1
    checkpoint_every: int = 1  # epochs between atomic checkpoints
    checkpoint_minutes: float = 10.0  # CUDA: at most one checkpoint per this many minutes of training (an epoch can
    # take 0.1 s there and a checkpoint more); always after the last epoch. CPU / MPS and 0: every checkpoint_every
    resume: bool = True  # continue from the last checkpoint of the run folder
    nproc: int = 1  # DDP processes (torchrun); 1 = single process
    log_every: int = 1  # epochs between loss-CSV rows (always every epoch at 1)


@dataclass(frozen=True)
class EvalConfig:
    """How scores and maps become decisions and metrics."""

    threshold: float = 0.5  # detection and localization threshold (PN 16)
    aupro_max_fpr: float = 0.3  # PN 11, as MVTec's evaluation
    pixel_bins: int = 1000  # score bins of the streamed pixel ROC / PRO curves (memory bound, see metrics.py)
    thresholds_study: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6)  # Table 7
    val_quantile: float = 0.99  # the label-free pixel threshold of every map: this quantile of its normal
    # validation pixels (the headline iou; docs/PROTOCOL.md "Measurement", issue 20)
    image_val_quantile: float = 0.95  # the label-free image threshold: this quantile of the normal validation
    # images' raw scores (mean_accuracy; issue 20: with 20 validation images the 0.95 quantile is a stable order
    # statistic, the maximum is not)


DEFAULT_RUN = "AVAGA-R_u"  # the study run the defaults below make (a test checks they agree with the registry)


@dataclass(frozen=True)
class RunConfig:
    """One run: method x data x model x losses x training x evaluation, named after its study registry entry."""

    name: str = DEFAULT_RUN  # study run (avaga_lib/study.py) or an explicit name outside the study; folder prefix
    method: str = "avaga"  # avaga | ae_l2 | ae_ssim (baselines, Bergmann et al. 2018)
    profile: str = "smoke"  # smoke | cpu | paper (the overrides that were applied)
    results_dir: str = "results/scratch"  # base of the results tree (pipeline passes "results")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def run_id(self) -> str:
        """Folder name of the run, e.g. ``AVAGA-R_u-seed0``, ``AVAGA-R_w-noSGB-seed1``, ``AE-SSIM-seed0``."""
        return f"{self.name}-seed{self.train.seed}"

    @property
    def run_dir(self) -> Path:
        """``<results_dir>/<dataset>/<category>/<run_id>``."""
        return Path(self.results_dir) / self.data.dataset / self.data.category / self.run_id

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return asdict(self)

    def save(self, path: Path | str) -> Path:
        """Write ``config.json`` (atomically) and return its path."""
        return write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """Inverse of :meth:`to_dict` (unknown keys raise, so stale configs are noticed).

        Configs saved before the study registry load too: the deleted settings of :data:`LEGACY_KEYS` are dropped,
        and a missing ``name`` is taken from the registry entry the config matches.

        Raises:
            ValueError: an unknown key, or a config without name that matches no study run.
        """
        cfg = _from_dict(cls, d)
        return cfg if "name" in d else replace(cfg, name=study_name(cfg))

    @classmethod
    def load(cls, path: Path | str) -> RunConfig:
        """Read a ``config.json``."""
        return cls.from_dict(json.loads(Path(path).read_text()))


# Settings deleted from the tree (nothing read them; notes became a run outcome in metrics.json). Old config.json
# files still hold them: they are accepted and dropped when loading, nothing else.
LEGACY_KEYS: frozenset[tuple[str, str]] = frozenset(
    {("RunConfig", "notes"), ("LossConfig", "reduction"), ("EvalConfig", "score_calibration"),
     ("TrainConfig", "compile")}
)


def _from_dict(cls: type, d: dict[str, Any]) -> Any:
    kwargs: dict[str, Any] = {}
    known = {f.name: f for f in fields(cls)}
    for key, value in d.items():
        if (cls.__name__, key) in LEGACY_KEYS:
            continue
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

# Profiles: overrides on top of the defaults. smoke = CPU-sized pipeline check (a category in 1-2 min on 2 cores;
# its 64 px give a 2x2 latent grid: it cannot judge localization); cpu = the smallest study that can show a signal
# on this 2-core machine (issue 13; docs/PROTOCOL.md "Profiles"); paper = the protocol of the paper's Appendix A.1.
CPU_EPOCHS = 15  # AE-L2's loss flattens by then on the embedded data at 128 px (docs/PROTOCOL.md "Profiles")
MIN_LATENT_GRID = 4  # the encoders downsample 32x: 128 px -> 4x4 latent cells; fewer cannot localize (issue 13)
ENCODER_STRIDE = 32  # the encoders downsample 32x: the side of the latent grid (and of the attention map's cells)
LOCALIZING_PROFILES: tuple[str, ...] = ("cpu", "paper")  # profiles that judge localization: latent grid >= 4x4
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {
        "data.image_size": 64,  # CPU-sized; latent 2x2 at 64 px
        "train.epochs": SMOKE_EPOCHS,
        "train.batch_size": 16,
        "train.lr": 2e-4,  # a few epochs only: a larger step than the paper's 1e-4
        "train.threads": 1,  # the pipeline runs one smoke run per core; the same numbers on any core count
    },
    "cpu": {
        "data.image_size": 128,  # 4x4 latent grid, the least that can localize (MIN_LATENT_GRID)
        "train.epochs": CPU_EPOCHS,
        "train.batch_size": 16,
        "train.lr": 1e-4,  # A.1
        "train.threads": 1,  # one run per core; the same numbers on any core count
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


def latent_side(image_size: Any) -> Any:
    """Side of the latent grid of an image side (an int, or a pandas Series of sides): ``image_size // 32``."""
    return image_size // ENCODER_STRIDE


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


def make_config(profile: str = "smoke", overrides: dict[str, Any] | None = None, run: str | None = None) -> RunConfig:
    """Build a run config from a profile, a study run and overrides, named after its study run.

    Args:
        profile: ``smoke``, ``cpu`` or ``paper``.
        run: a study registry name (``AVAGA-R_u-flat``): its overrides are applied first and it names the config.
        overrides: dotted keys, e.g. ``{"train.setting": "weak", "data.category": "bottle"}``; ``name`` names a run
            outside the study. Without ``run`` or ``name`` the config is named after the registry entry it matches.

    Raises:
        ValueError: an unknown profile / key / run, an invalid option, or a config that matches no study run and
            has no explicit name (the message says which).
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile '{profile}'; choose one of {sorted(PROFILES)}")
    overrides = overrides or {}
    cfg = apply_overrides(RunConfig(profile=profile), PROFILES[profile])
    if run is not None:
        cfg = apply_overrides(cfg, {**study.get(run).overrides, "name": run})
    cfg = apply_overrides(cfg, overrides)
    if run is None and "name" not in overrides:
        _check_options(cfg)  # a bad option is reported as such, not as "matches no study run"
        cfg = replace(cfg, name=study_name(cfg))
    validate(cfg)
    return cfg


def validate(cfg: RunConfig) -> None:
    """Reject unknown options and impossible combinations with a message that says what to change.

    The one place string options are checked (allowed values: the module constants above). A config named after a
    study run must be that run (same values on every key that tells the study's runs apart).
    """
    _check_options(cfg)
    if not cfg.name or "/" in cfg.name or cfg.name != cfg.name.strip():
        raise ValueError(f"name '{cfg.name}' must be a non-empty folder name without '/' or surrounding spaces")
    expected = _RUN_IDENTITY.get(cfg.name)
    if expected is not None:
        actual = _identity(cfg)
        diff = {k: v for k, v in actual.items() if v != expected[k]}
        if diff:
            raise ValueError(f"config named '{cfg.name}' has {diff}, but that study run has "
                             f"{ {k: expected[k] for k in diff} }; pick the run that has these values "
                             "or give the config its own name")


def _check_options(cfg: RunConfig) -> None:
    options = (
        ("method", cfg.method, METHODS),
        ("profile", cfg.profile, tuple(PROFILES)),
        ("data.dataset", cfg.data.dataset, DATASETS),
        ("data.geometry", cfg.data.geometry, GEOMETRIES),
        ("model.variant", cfg.model.variant, VARIANTS),
        ("model.latent", cfg.model.latent, LATENTS),
        ("model.gradcam_layer", cfg.model.gradcam_layer, GRADCAM_LAYERS),
        ("model.attention_norm", cfg.model.attention_norm, ATTENTION_NORMALIZATIONS),
        ("loss.attention_constraint", cfg.loss.attention_constraint, ATTENTION_CONSTRAINTS),
        ("model.test_map", cfg.model.test_map, TEST_MAPS),
        ("train.setting", cfg.train.setting, SETTINGS),
        ("train.amp", cfg.train.amp, AMP_MODES),
    )
    for key, value, allowed in options:
        if value not in allowed:
            raise ValueError(f"{key} '{value}' unknown; choose one of {allowed}")
    if cfg.data.image_size % 32 != 0:
        raise ValueError(f"data.image_size={cfg.data.image_size} must be a multiple of 32 (64, 128, 256)")
    if cfg.profile in LOCALIZING_PROFILES and latent_side(cfg.data.image_size) < MIN_LATENT_GRID:
        grid = latent_side(cfg.data.image_size)
        raise ValueError(f"data.image_size={cfg.data.image_size} gives a {grid}x{grid} latent grid: the {cfg.profile} "
                         f"profile judges localization and needs at least {MIN_LATENT_GRID}x{MIN_LATENT_GRID} "
                         f"(image_size >= {ENCODER_STRIDE * MIN_LATENT_GRID}); use the smoke profile for a pipeline "
                         "check")
    if not 0.0 < cfg.eval.val_quantile < 1.0:
        raise ValueError(f"eval.val_quantile={cfg.eval.val_quantile} must be in (0, 1), e.g. 0.99")
    if cfg.train.threads < 0:
        raise ValueError(f"train.threads={cfg.train.threads} must be >= 0 (0 = torch's default)")
    if cfg.model.gain_scale <= 0 or not 0.0 <= cfg.model.gain_offset <= 1.0:
        raise ValueError(f"model.gain_scale={cfg.model.gain_scale} must be > 0 and model.gain_offset="
                         f"{cfg.model.gain_offset} in [0, 1] (the gain mask compares a min-max map in [0, 1])")
    if not 0.0 < cfg.loss.size_p < 1.0 or cfg.loss.barrier_t <= 0:
        raise ValueError(f"loss.size_p={cfg.loss.size_p} must be in (0, 1) and loss.barrier_t={cfg.loss.barrier_t} > 0")
    # which model.* keys a method accepts is the method's own rule (Method.check, avaga_lib/models/)
    if not cfg.loss.adversarial_recon and cfg.train.setting != "weak":
        raise ValueError("loss.adversarial_recon=False (classifier + L_a only) exists only for train.setting=weak")


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


# model.pretrained of the offline initialisation arm (avaga_lib.models.avaga.pretrain.SELFSUP)
SELFSUP_PRETRAINED = "selfsup"


def _identity_value(key: str, value: Any) -> Any:
    """The value of ``key`` as run identity. ``model.pretrained`` tells runs apart only by whether it asks for the
    study's self-supervised encoder: ``imagenet`` (the default, random init offline with a recorded note), ``none``
    and a hand-given path were never part of a run's name (tests and hand runs ask for ``none`` under AVAGA-R_u);
    the initialisation a run actually had is its recorded ``pretrained_source``."""
    if key == "model.pretrained":
        return SELFSUP_PRETRAINED if value == SELFSUP_PRETRAINED else "default"
    return value


def _identity(cfg: RunConfig) -> dict[str, Any]:
    """The config's values on the keys that tell the study's runs apart."""
    return {k: _identity_value(k, _get(cfg, k)) for k in study.identity_keys()}


# Identity of every study run: the defaults with the entry's overrides (an entry with a bad key fails at import).
_RUN_IDENTITY: dict[str, dict[str, Any]] = {
    r.name: _identity(apply_overrides(RunConfig(), r.overrides)) for r in study.RUNS
}


def study_name(cfg: RunConfig) -> str:
    """Name of the study run whose identity the config has (its ``name`` field is ignored).

    Raises:
        ValueError: the config is no run of the study; the message says how to name it or add it.
    """
    actual = _identity(cfg)
    for name, expected in _RUN_IDENTITY.items():
        if actual == expected:
            return name
    raise ValueError(f"config {actual} matches no run of the study registry (avaga_lib/study.py): add a StudyRun "
                     "there, or give the config its own name (override 'name', e.g. --set name=my-run)")


# Notebook parameter -> dotted config key: notebooks 03/04 and the pipeline build configs through this one mapping
# (:func:`config_from_parameters`). ``run`` (a study run) and ``profile`` are handled apart.
PARAMETERS: dict[str, str] = {
    "dataset": "data.dataset",
    "root": "data.root",
    "category": "data.category",
    "image_size": "data.image_size",
    "geometry": "data.geometry",
    "epochs": "train.epochs",
    "seed": "train.seed",
    "device": "train.device",
    "results_dir": "results_dir",
    # switches of the study's runs, for hand use in a notebook (the pipeline passes ``run`` instead)
    "method": "method",
    "variant": "model.variant",
    "latent": "model.latent",
    "attention_loss": "loss.attention_loss",
    "adversarial_recon": "loss.adversarial_recon",
    "sgb": "loss.sgb",
}


def config_from_parameters(setting: str, parameters: dict[str, Any], profile: str) -> RunConfig:
    """The config a training notebook builds from its papermill parameters (notebook 03: unsupervised, 04: weak).

    Args:
        setting: the notebook's setting, ``unsupervised`` or ``weak``.
        parameters: notebook parameters: ``run`` (a study run name; "" or None = named after the run matched),
            ``profile`` (ignored here: pass it as ``profile``) and the keys of :data:`PARAMETERS`; None values are
            skipped (None = the run's / profile's value).
        profile: ``smoke`` or ``paper``.

    Raises:
        ValueError: an unknown parameter, a run of the other setting, or an invalid config (named).
    """
    unknown = sorted(k for k in parameters if k not in PARAMETERS and k not in ("run", "profile"))
    if unknown:
        raise ValueError(f"unknown notebook parameter '{unknown[0]}'; known: {sorted([*PARAMETERS, 'profile', 'run'])}")
    run = parameters.get("run") or None
    if run is not None and study.get(run).setting != setting:
        raise ValueError(f"run '{run}' is a {study.get(run).setting} run: its notebook is {study.get(run).notebook}")
    overrides = {"train.setting": setting}
    overrides |= {PARAMETERS[k]: v for k, v in parameters.items() if k in PARAMETERS and v is not None}
    return make_config(profile, overrides, run=run)


def config_hash(cfg: RunConfig) -> str:
    """Short stable hash of a config (used to skip finished runs whose config is unchanged)."""
    blob = json.dumps(asdict(cfg), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
