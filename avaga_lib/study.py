"""The study registry: every run of the paper's tables, declared once.

Each :class:`StudyRun` names a run (the run folder is ``<name>-seed<k>``), the dotted config overrides that make it
(on top of the defaults of :mod:`avaga_lib.config`), its group (``main`` / ``ablations`` / ``remedies`` / ``arms`` /
``baselines``, what ``RUNS=`` selects) and the paper's table column(s) it sits beside. Everything else reads
this table: the pipeline plans from it (``params/*.yaml`` only narrow it), ``config.make_config`` names a config
after the entry it matches, the report lays out its tables and paper columns from it, and notebooks 03/04 build
their config from an entry (``run`` parameter).

Adding an ablation = adding one :class:`StudyRun` to :data:`RUNS` (see the README, "Extending the study").

This module is pure data and look-ups: it imports nothing from the package, so the config layer can read it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

GROUPS: tuple[str, ...] = ("main", "ablations", "remedies", "arms", "baselines")
# The training notebook of each setting (papermill executes it once per run, seed and category).
NOTEBOOKS: Mapping[str, str] = MappingProxyType(
    {"unsupervised": "03_train_unsupervised.ipynb", "weak": "04_train_weakly_supervised.ipynb"}
)
MAIN_TABLE = "main"  # Tables 2-5: IoU / mean accuracy per category (MVTec AD, STC)
ABLATION_TABLE = "ablation"  # Tables 6/8: the ablation columns of Sec. 5


@dataclass(frozen=True)
class Column:
    """Where a run sits in one of the paper's tables.

    Attributes:
        position: left-to-right place of the run in our table (Tables 6/8: the paper's column number 1-6).
        paper: header of the column in the transcribed CSV (``avaga_lib/paper_tables``).
    """

    position: int
    paper: str


@dataclass(frozen=True)
class StudyRun:
    """One run of the study.

    Attributes:
        name: the run's name, e.g. ``AVAGA-R_w-noSGB``; its folder is ``<name>-seed<k>``.
        group: ``main`` / ``ablations`` / ``remedies`` (issue 13: trained variants that answer the attention's
            collapse, reported beside the literal recipe, never in its place) / ``arms`` (issue 21: the recipe with
            one confound changed, initialisation or adversarial term, to measure what it does) / ``baselines``.
        overrides: dotted config keys that make this run (``train.setting`` included); the rest are the defaults.
        main: column of Tables 2-5, or None.
        ablation: column of Tables 6/8, or None.
        remedy_of: for a remedy, the paper's run it changes (reported beside it and compared with it); else "".
        arm_of: for an arm, the paper's run it changes (reported beside it and compared with it); else "".
    """

    name: str
    group: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    main: Column | None = None
    ablation: Column | None = None
    remedy_of: str = ""
    arm_of: str = ""

    @property
    def setting(self) -> str:
        """``unsupervised`` (eq. 4, the default) or ``weak`` (eq. 6)."""
        return str(self.overrides.get("train.setting", "unsupervised"))

    @property
    def notebook(self) -> str:
        """File name of the training notebook that executes this run (03 or 04)."""
        return NOTEBOOKS[self.setting]


_U = {"train.setting": "unsupervised"}
_W = {"train.setting": "weak"}

# Order = planning order of the pipeline (main runs first, then ablations, remedies, baselines).
RUNS: tuple[StudyRun, ...] = (
    StudyRun("AVAGA-R_u", "main", {**_U, "model.variant": "R"}, Column(4, "AVAGA-R_u"), Column(3, "AVAGA-R_u")),
    StudyRun("AVAGA-R_w", "main", {**_W, "model.variant": "R"}, Column(6, "AVAGA-R_w"), Column(6, "AVAGA-R_w")),
    StudyRun("AVAGA-D_u", "main", {**_U, "model.variant": "D"}, Column(3, "AVAGA-D_u")),  # Sec. 3, DCGAN parts
    StudyRun("AVAGA-D_w", "main", {**_W, "model.variant": "D"}, Column(5, "AVAGA-D_w")),
    StudyRun("AVAGA-R_u-noattn", "ablations", {**_U, "loss.attention_loss": False},  # Sec. 5, col. 1
             ablation=Column(1, "AVAGA-R_u_without_attention")),
    StudyRun("AVAGA-R_u-flat", "ablations", {**_U, "model.latent": "flat"},  # Sec. 5, col. 2: FC latent of 100
             ablation=Column(2, "AVAGA-R_u_flat_latent")),
    StudyRun("AVAGA-R_w-noadv", "ablations", {**_W, "loss.adversarial_recon": False},  # col. 4: classifier + L_a
             ablation=Column(4, "AVAGA-R_w_without_adversarial_reconstruction")),
    StudyRun("AVAGA-R_w-noSGB", "ablations", {**_W, "loss.sgb": False},  # col. 5: L_a on every normal image (PN 3)
             ablation=Column(5, "AVAGA-R_w_without_SGB")),
    # Remedies of the collapsed attention (issue 13, docs/PROTOCOL.md "Remedies"); no paper column: beside the recipe
    StudyRun("AVAGA-R_u-maxnorm", "remedies", {**_U, "model.attention_norm": "max"},  # (a) ReLU / per-image max
             remedy_of="AVAGA-R_u"),
    StudyRun("AVAGA-R_u-gain", "remedies", {**_U, "model.attention_norm": "gain"},  # (b) GAIN-style soft mask
             remedy_of="AVAGA-R_u"),
    # (c) the size constraint mean(A) >= 1 - p as an adaptation: the barrier takes eq. 3's weight w_attn = 1e-2 and the
    # test map stays 1 - A (committed results use it; issue 21). Not the source's method: see -size-faithful
    StudyRun("AVAGA-R_u-size", "remedies", {**_U, "loss.attention_constraint": "size_barrier"},
             remedy_of="AVAGA-R_u"),
    # (c') the size constraint as Silva-Rodriguez et al. (BMVC 2021) describe it (issue 21): barrier weighted 10, test
    # map = the per-image min-max of the Grad-CAM, high = anomalous (docs/PROTOCOL.md "Remedies")
    StudyRun("AVAGA-R_u-size-faithful", "remedies", {**_U, "loss.attention_constraint": "size_barrier",
                                                     "loss.w_attn": 10.0, "model.test_map": "gradcam_minmax"},
             remedy_of="AVAGA-R_u"),
    StudyRun("AVAGA-R_w-maxnorm", "remedies", {**_W, "model.attention_norm": "max"}, remedy_of="AVAGA-R_w"),
    StudyRun("AVAGA-R_w-gain", "remedies", {**_W, "model.attention_norm": "gain"}, remedy_of="AVAGA-R_w"),
    StudyRun("AVAGA-R_w-size", "remedies", {**_W, "loss.attention_constraint": "size_barrier"}, remedy_of="AVAGA-R_w"),
    # Arms of issue 21: the literal recipe with one confound changed (docs/PROTOCOL.md "7. Pretraining", "Remedies").
    # selfsup: the encoder pretrained offline by masked inpainting on the category's normal images (a proxy for
    # ImageNet, not ImageNet; made on first use, `python -m avaga_lib.cli pretrain`); advoff: w_adv = 0, since the
    # discriminator's takeover was measured to degrade the reconstruction map (pixel AUROC 0.85 at epoch 2 -> 0.60 at
    # epoch 8, AVAGA-R_u, embedded granite, cpu profile; issue 21)
    StudyRun("AVAGA-R_u-selfsup", "arms", {**_U, "model.pretrained": "selfsup"}, arm_of="AVAGA-R_u"),
    StudyRun("AVAGA-R_u-advoff", "arms", {**_U, "loss.w_adv": 0.0}, arm_of="AVAGA-R_u"),
    # the best remedy pretrained alike: -size-faithful had the highest pixel AUROC of the remedies in seed 0 of the cpu
    # study rerun after issue 20 (0.736 vs 0.438-0.595, embedded granite, 2026-12-02), a selection on one seed's test
    # set, named as such; the arm is judged against its own random-init twin, paired over seeds
    StudyRun("AVAGA-R_u-size-faithful-selfsup", "arms", {**_U, "loss.attention_constraint": "size_barrier",
                                                        "loss.w_attn": 10.0, "model.test_map": "gradcam_minmax",
                                                        "model.pretrained": "selfsup"},
             arm_of="AVAGA-R_u-size-faithful"),
    # Bergmann et al. 2018, measured under our protocol; the paper quotes them (its CSV headers use underscores)
    StudyRun("AE-L2", "baselines", {**_U, "method": "ae_l2"}, Column(1, "AE_L2")),
    StudyRun("AE-SSIM", "baselines", {**_U, "method": "ae_ssim"}, Column(2, "AE_SSIM")),
)  # fmt: skip

_BY_NAME: Mapping[str, StudyRun] = MappingProxyType({r.name: r for r in RUNS})


def names() -> tuple[str, ...]:
    """Every run name, in registry order."""
    return tuple(_BY_NAME)


def get(name: str) -> StudyRun:
    """The registry entry called ``name``.

    Raises:
        ValueError: unknown name (the known ones are listed).
    """
    if name not in _BY_NAME:
        raise ValueError(f"run '{name}' is not in the study registry (avaga_lib/study.py); known: {list(_BY_NAME)}")
    return _BY_NAME[name]


def select(wanted: Sequence[str] | None, runs: Sequence[StudyRun] = RUNS) -> list[StudyRun]:
    """The runs among ``runs`` named in ``wanted`` by run name or group, in registry order (None = all of them).

    Raises:
        ValueError: an item of ``wanted`` that is neither a run nor a group of ``runs`` (the known ones are listed).
    """
    if not wanted:
        return list(runs)
    known = [r.name for r in runs] + [g for g in GROUPS if any(r.group == g for r in runs)]
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise ValueError(f"{unknown} not in the selected runs; known runs and groups: {sorted(known)}")
    return [r for r in runs if r.name in wanted or r.group in wanted]


def identity_keys() -> tuple[str, ...]:
    """Config keys that tell the runs apart: every key some entry overrides (sorted)."""
    return tuple(sorted({k for r in RUNS for k in r.overrides}))


def table_methods(table: str) -> tuple[str, ...]:
    """Run names of the paper table ``table`` (:data:`MAIN_TABLE` / :data:`ABLATION_TABLE`), left to right."""
    placed = [(c.position, r.name) for r in RUNS if (c := _column(r, table)) is not None]
    return tuple(name for _, name in sorted(placed))


def paper_columns(table: str) -> dict[str, str]:
    """Run name -> column header of the transcribed paper CSV, for the runs of ``table``."""
    return {r.name: c.paper for r in RUNS if (c := _column(r, table)) is not None}


def _column(run: StudyRun, table: str) -> Column | None:
    if table not in (MAIN_TABLE, ABLATION_TABLE):
        raise ValueError(f"table '{table}' unknown; choose {MAIN_TABLE} or {ABLATION_TABLE}")
    return run.main if table == MAIN_TABLE else run.ablation


# Read by the report and notebooks 05/07 (derived: edit RUNS, never these).
MAIN_METHODS: tuple[str, ...] = table_methods(MAIN_TABLE)  # Tables 2-5 columns
ABLATION_METHODS: tuple[str, ...] = table_methods(ABLATION_TABLE)  # Tables 6/8 columns 1-6
ABLATIONS: tuple[str, ...] = tuple(r.name for r in RUNS if r.group == "ablations")  # the switched-off variants
BASELINES: tuple[str, ...] = tuple(r.name for r in RUNS if r.group == "baselines")
REMEDIES: tuple[str, ...] = tuple(r.name for r in RUNS if r.group == "remedies")  # issue 13, beside the recipe
ARMS: tuple[str, ...] = tuple(r.name for r in RUNS if r.group == "arms")  # issue 21, beside the recipe


def remedies_of(name: str) -> tuple[str, ...]:
    """The remedies of the paper's run ``name`` (``AVAGA-R_u`` -> its maxnorm / gain / size(-faithful) variants)."""
    return tuple(r.name for r in RUNS if r.remedy_of == name)


def arms_of(name: str) -> tuple[str, ...]:
    """The arms of run ``name`` (``AVAGA-R_u`` -> its selfsup / advoff variants; a remedy -> its own), in order."""
    return tuple(r.name for r in RUNS if r.arm_of == name)


PAPER_MAIN_COLUMN: dict[str, str] = paper_columns(MAIN_TABLE)
PAPER_ABLATION_COLUMN: dict[str, str] = paper_columns(ABLATION_TABLE)
