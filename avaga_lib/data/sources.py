"""The data sources of the study as one small registry, and the resolver that looks them up.

Each :class:`DataSource` declares where its data lives when ``data.root`` is empty and how that folder is made
ready when it is missing: the embedded set is generated, Magnetic Tile is converted from ``../shared``, the STC
release is extracted into its cache; MVTec AD and "bring your own" folders have no default and need ``ROOT=``.
Adding a dataset = one entry in :data:`SOURCES` (plus its converter module, which imports only ``records``).

Import direction (no cycle): ``dataset`` -> ``sources`` -> ``mtd`` / ``stc`` / ``synthetic`` -> ``records``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from avaga_lib import paths
from avaga_lib.config import DataConfig
from avaga_lib.data import mtd, stc, synthetic
from avaga_lib.data.records import DataLayoutError


@dataclass(frozen=True)
class DataSource:
    """One dataset of the study: where it lives by default and how that location is made ready.

    Attributes:
        name: the ``data.dataset`` value.
        description: one line for help texts and docs.
        default_root: the folder used when ``data.root`` is empty; None = no default (``ROOT=`` is required).
        prepare: ``(default_root, cfg) -> root`` that makes the default folder ready (generate, convert,
            extract) or raises :class:`DataLayoutError` naming the folder and the fix; None = nothing to prepare.
        prepares_given_root: True when a given ``data.root`` goes through ``prepare`` too (STC: the root may be
            the release, which is extracted into the cache); False = a given root is used as is.
        prepares_per_category: True when ``prepare`` makes one category (scene) ready at a time (STC extracts per
            scene), so each category is prepared once; False = one preparation serves every category.
    """

    name: str
    description: str
    default_root: Callable[[], Path] | None = None
    prepare: Callable[[Path, DataConfig], Path] | None = None
    prepares_given_root: bool = False
    prepares_per_category: bool = False


def _prepare_embedded(root: Path, cfg: DataConfig) -> Path:
    """Generate the embedded set with the generator's defaults unless a complete copy of this generator version is
    there (a copy left by an older generator is replaced, with a warning)."""
    if (root / synthetic.MARKER).is_file() and not synthetic.is_current(root):
        warnings.warn(f"{root} was made by an older embedded generator; regenerating it with version "
                      f"{synthetic.GENERATOR_VERSION} (results of the old images are not comparable)", stacklevel=2)
    if not synthetic.is_current(root):
        synthetic.generate_dataset(root)  # looked up on the module at call time (tests substitute a tiny one)
    return root


def _prepare_mtd(root: Path, cfg: DataConfig) -> Path:
    """Use the converted Magnetic Tile copy, or convert the shared release into it."""
    if (root / mtd.MARKER).is_file():
        return root
    src = paths.shared_magnetic_tile()
    if src is None:
        raise DataLayoutError(f"Magnetic Tile Defect not found: no converted copy at {root} and no source at "
                              f"{paths.project_root().parent / 'shared' / 'data' / 'magnetic_tile'}; run "
                              "`python -m avaga_lib.cli convert-mtd SRC` or pass ROOT=<converted folder>")
    return mtd.convert_magnetic_tile(src, root)


def _prepare_stc(root: Path, cfg: DataConfig) -> Path:
    """The official release is extracted once into an MVTec-layout cache (data/stc.py); a cache is used as is."""
    return stc.ensure_stc_cache(cfg.root or root, scenes=[cfg.category])


def _stc_cache_root() -> Path:
    return paths.data_dir() / stc.CACHE_DIRNAME


SOURCES: dict[str, DataSource] = {
    source.name: source
    for source in (
        DataSource("embedded", "synthetic textures generated on first use (data/embedded)", paths.embedded_root,
                   _prepare_embedded),
        DataSource("mtd", "Magnetic Tile Defect converted to MVTec layout (data/mtd, from ../shared)",
                   paths.mtd_converted_root, _prepare_mtd),
        DataSource("mvtec", "MVTec AD as extracted from its archive (ROOT= required; download-mvtec)"),
        DataSource("folder", "your own images in MVTec layout (ROOT= required)"),
        DataSource("stc", "ShanghaiTech Campus: release extracted into an MVTec-layout cache (data/stc_cache)",
                   _stc_cache_root, _prepare_stc, prepares_given_root=True, prepares_per_category=True),
    )
}


def resolve_root(cfg: DataConfig) -> Path:
    """Dataset root for ``cfg``: ``cfg.root`` when given, else the source's default location, made ready.

    ``embedded`` is generated (defaults) when missing; ``mtd`` is converted from the shared Magnetic Tile copy
    when missing; ``stc`` extracts a release given as root (or uses its cache); ``mvtec`` / ``folder`` need
    ``cfg.root``.

    Raises:
        DataLayoutError: the root does not exist, or cannot be found/made for this dataset.
    """
    source = SOURCES.get(cfg.dataset)
    if cfg.root and not (source is not None and source.prepares_given_root):
        root = Path(cfg.root).expanduser()
        if not root.is_dir():
            raise DataLayoutError(f"data.root={root} does not exist; expected a folder in MVTec layout "
                                  "(<root>/<category>/train/good, test/, ground_truth/)")
        return root
    if source is None:
        *others, last = SOURCES
        raise DataLayoutError(f"unknown dataset '{cfg.dataset}'; choose {', '.join(others)} or {last}")
    if source.default_root is None or source.prepare is None:
        raise DataLayoutError(f"dataset '{cfg.dataset}' has no default location: pass ROOT=/path/to/dataset "
                              "(data.root=...), a folder in MVTec layout")
    return source.prepare(source.default_root(), cfg)


PreparationKey = tuple[str, str, str]
"""(dataset, root, category or "") that one preparation covers (:func:`preparation_key`)."""


def preparation_key(cfg: DataConfig) -> PreparationKey:
    """What one preparation of ``cfg``'s data covers: its dataset at its root, per category where the source
    prepares one category at a time (:attr:`DataSource.prepares_per_category`)."""
    source = SOURCES.get(cfg.dataset)
    per_category = source is not None and source.prepares_per_category
    return (cfg.dataset, cfg.root, cfg.category if per_category else "")


def prepare_datasets(cfgs: Iterable[DataConfig]) -> dict[PreparationKey, str]:
    """Make the data of ``cfgs`` ready (generate / convert / extract, :func:`resolve_root`) once per
    :func:`preparation_key`, here, before runs start in parallel (they would race to write the same folder).

    Every caller that starts runs side by side uses this one function: the study pipeline and ``make gpu-study``.

    Returns:
        ``"ErrorType: message"`` per preparation that failed (its runs cannot start; the callers mark them failed);
        empty when every dataset is ready.
    """
    errors: dict[PreparationKey, str] = {}
    done: set[PreparationKey] = set()
    for cfg in cfgs:
        key = preparation_key(cfg)
        if key in done:
            continue
        done.add(key)
        try:
            resolve_root(cfg)
        except Exception as exc:  # noqa: BLE001 - recorded per preparation; the other datasets go on
            errors[key] = f"{type(exc).__name__}: {exc}"
    return errors
