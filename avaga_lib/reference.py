"""Reproduced vs reference: every table cell of a results tree against the committed reference results.

The project commits curated results under ``results/reference/`` (per run ``config.json``, ``metrics.json``,
``losses.csv``, ``calibration.json``, ``splits.json``; the tables and REPORT.md made from them; ``make reference``
refreshes it, :func:`avaga_lib.report.refresh_reference`). ``make reproduce`` writes its own tree and reads the
reference only here, never as runs. :func:`compare_with_reference` states, per table cell (dataset, category,
method, metric: the mean over the seeds run here), one of:

- ``reproduced``: |ours - reference| <= :data:`TOLERANCE`, the reference's mean taken over the same seeds;
- ``differs``: both values given;
- ``not in reference``: the reference holds no run of that cell with the same config (profile, seed, image size,
  epochs, threads, every other setting, and the recorded device and encoder initialisation); the reason names
  the first keys that differ.

Tolerance, 1e-6 absolute: a CPU run at a fixed thread count (``train.threads``; 1 at the smoke profile) is
deterministic, so the same config gives the same metrics bit for bit; 1e-6 leaves room only for float rounding,
while one pixel of a 64 x 64 map moves an IoU by about 1e-4. GPU kernels are not all deterministic: expect
``differs`` for GPU runs (docs/PERFORMANCE.md gives the measured spread).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from avaga_lib.config import RunConfig
from avaga_lib.io import read_json
from avaga_lib.tables import table_metrics

TOLERANCE = 1e-6
CSV_NAME = "reference_comparison.csv"  # written under <results>/tables/
SECTION = "Reproduced vs reference"  # REPORT.md heading; its anchor is ANCHOR
ANCHOR = "reproduced-vs-reference"
REPRODUCED, DIFFERS, MISSING = "reproduced", "differs", "not in reference"
# Config keys that say where things are or how a run is checkpointed, not what it computes.
IGNORED_KEYS = frozenset({"results_dir", "data.root", "train.resume", "train.checkpoint_every", "train.log_every"})
COLUMNS = ("dataset", "category", "method", "metric", "seeds", "ours", "reference", "diff", "status", "reason",
           "tolerance")
MAX_ROWS = 50  # differing cells listed in REPORT.md (all of them are in the CSV)


@dataclass
class Comparison:
    """The outcome per table cell (``frame``, columns :data:`COLUMNS`) and where the reference was read."""

    frame: pd.DataFrame
    tolerance: float = TOLERANCE
    reference: str = "results/reference"

    def count(self, status: str) -> int:
        """Cells with ``status``."""
        return int((self.frame["status"] == status).sum()) if len(self.frame) else 0

    @property
    def max_abs_diff(self) -> float:
        """Largest |ours - reference| over the differing cells with both values (NaN when none)."""
        diffs = self.frame.loc[self.frame["status"] == DIFFERS, "diff"].abs().dropna() if len(self.frame) else []
        return float(max(diffs)) if len(diffs) else math.nan

    def top_reason(self) -> str:
        """The most frequent reason a cell is not in the reference ("" when every cell is)."""
        missing = self.frame[self.frame["status"] == MISSING] if len(self.frame) else self.frame
        return str(missing["reason"].value_counts().index[0]) if len(missing) else ""

    def summary_line(self, report_md: str = "results/REPORT.md") -> str:
        """One line for the terminal, e.g. ``reference: 186/192 cells reproduced, 6 differ (max |diff| 0.012),
        0 not in reference; see results/REPORT.md#reproduced-vs-reference``."""
        n, differ, missing = len(self.frame), self.count(DIFFERS), self.count(MISSING)
        line = f"reference: {self.count(REPRODUCED)}/{n} cells reproduced, {differ} differ"
        if differ and not math.isnan(self.max_abs_diff):
            line += f" (max |diff| {self.max_abs_diff:.3g})"
        line += f", {missing} not in reference"
        if missing:
            line += f" (e.g. {_shorten(self.top_reason(), 90)})"
        return f"{line}; see {report_md}#{ANCHOR}"

    def markdown(self) -> str:
        """The REPORT.md section (heading included)."""
        lines = [f"## {SECTION}", "",
                 f"Each table cell (dataset, category, method, metric; the mean over the seeds run here) against the "
                 f"committed reference `{self.reference}` (refreshed with `make reference`): **{REPRODUCED}** when "
                 f"|ours - reference| <= {self.tolerance:g}, the reference's mean taken over the same seeds; "
                 f"**{DIFFERS}** otherwise; **{MISSING}** when the reference holds no run with the same config "
                 "(profile, seed, image size, epochs, threads and every other setting, device and encoder "
                 "initialisation alike). Tolerance: a CPU run at a fixed thread count is deterministic, so the "
                 f"margin {self.tolerance:g} only absorbs float rounding; GPU runs are not bit-reproducible. "
                 f"Every cell: `tables/{CSV_NAME}`.", "",
                 f"**{self.count(REPRODUCED)} of {len(self.frame)} cells reproduced, {self.count(DIFFERS)} differ"
                 + (f" (max |diff| {self.max_abs_diff:.3g})" if not math.isnan(self.max_abs_diff) else "")
                 + f", {self.count(MISSING)} not in reference.**", ""]
        differ = self.frame[self.frame["status"] == DIFFERS] if len(self.frame) else self.frame
        if len(differ):
            differ = differ.assign(_abs=differ["diff"].abs().fillna(math.inf)).sort_values("_abs", ascending=False)
            lines += ["| dataset | category | method | metric | seeds | ours | reference | ours - reference |",
                      "|---|---|---|---|---|---|---|---|"]
            for _, r in differ.head(MAX_ROWS).iterrows():
                lines.append(f"| {r['dataset']} | {r['category']} | {r['method']} | {r['metric']} | {r['seeds']} | "
                             f"{_num(r['ours'])} | {_num(r['reference'])} | {_num(r['diff'])} |")
            if len(differ) > MAX_ROWS:
                lines.append(f"\n({len(differ) - MAX_ROWS} more differing cells in `tables/{CSV_NAME}`)")
            lines.append("")
        missing = self.frame[self.frame["status"] == MISSING] if len(self.frame) else self.frame
        if len(missing):
            lines += ["Not in reference:", ""]
            lines += [f"- {count} cells: {reason}" for reason, count in missing["reason"].value_counts().items()]
            lines.append("")
        return "\n".join(lines)


def _num(value: Any) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{float(value):.6g}"


def _shorten(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out |= _flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
    return out


def run_identity(run_dir: Path | str, notes: Iterable[str] = ()) -> dict[str, Any]:
    """What decides a run's numbers: its config (flattened, legacy keys dropped, :data:`IGNORED_KEYS` left out),
    the device it ran on (``metrics.json``) and how its encoder was initialised (the run's ``pretrained_source``
    note).

    Raises:
        ValueError: ``config.json`` missing or not a run config (the message names the file).
    """
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not path.exists():
        raise ValueError(f"{path} missing: a reference run needs its config.json beside metrics.json")
    known = set(RunConfig.__dataclass_fields__)
    cfg = RunConfig.from_dict({k: v for k, v in read_json(path).items() if k in known})
    identity = {k: v for k, v in _flatten(asdict(cfg)).items() if k not in IGNORED_KEYS}
    metrics_path = run_dir / "metrics.json"
    metrics = read_json(metrics_path) if metrics_path.exists() else {}
    identity["record.device"] = metrics.get("device") if isinstance(metrics, dict) else None
    sources = [n.split("=", 1)[1] for n in notes if str(n).startswith("pretrained_source=")]
    identity["record.pretrained_source"] = sources[0] if sources else None
    return identity


def _config_difference(ours: dict[str, Any], ref: dict[str, Any], n: int = 3) -> str:
    """"train.threads 1 here, 0 in the reference; ..." for the first ``n`` keys that differ ("" when none)."""
    keys = sorted(k for k in set(ours) | set(ref) if ours.get(k) != ref.get(k))
    parts = [f"{k} {ours.get(k)!r} here, {ref.get(k)!r} in the reference" for k in keys[:n]]
    return "; ".join(parts) + (f"; {len(keys) - n} more" if len(keys) > n else "")


def _match(grp: pd.DataFrame, reference: dict[tuple[str, str, str, int], pd.Series],
           identities: dict[str, dict[str, Any]]) -> tuple[list[pd.Series], str]:
    """The reference runs of a cell's seeds with the same identity, or ([], the reason there are none)."""
    matched: list[pd.Series] = []
    for _, row in grp.sort_values("seed").iterrows():
        key = (row["dataset"], row["category"], row["method"], int(row["seed"]))
        ref = reference.get(key)
        if ref is None:
            present = any(k[:3] == key[:3] for k in reference)
            return [], (f"the reference has no {key[2]} run at seed {key[3]} for {key[0]}/{key[1]}" if present else
                        f"the reference has no {key[2]} run for {key[0]}/{key[1]}")
        diff = _config_difference(identities[row["run_dir"]], identities[ref["run_dir"]])
        if diff:
            return [], f"config differs: {diff}"
        matched.append(ref)
    return matched, ""


def _mean(values: Iterable[Any]) -> float:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(vals) / len(vals) if vals else math.nan


def _identities(runs: pd.DataFrame) -> dict[str, dict[str, Any]]:
    return {str(r["run_dir"]): run_identity(r["run_dir"], r.get("notes", ())) for _, r in runs.iterrows()}


def compare_with_reference(runs: pd.DataFrame, reference_runs: pd.DataFrame, tolerance: float = TOLERANCE,
                           reference: str = "results/reference", unavailable: str = "") -> Comparison:
    """Every table cell of ``runs`` (from :func:`avaga_lib.results.collect_runs`) against ``reference_runs``.

    Args:
        runs: the runs of this results tree.
        reference_runs: the runs of the reference tree (may be empty).
        tolerance: largest |ours - reference| still counted as reproduced.
        reference: where the reference was read (shown in the text).
        unavailable: why there is no reference at all (every cell gets it as its reason); "" = there is one.

    Raises:
        ValueError: a run folder without a readable config.json.
    """
    rows: list[dict[str, Any]] = []
    if runs.empty:
        return Comparison(pd.DataFrame(columns=list(COLUMNS)), tolerance, reference)
    by_key = {} if reference_runs.empty else {
        (r["dataset"], r["category"], r["method"], int(r["seed"])): r for _, r in reference_runs.iterrows()}
    identities = _identities(runs) | ({} if reference_runs.empty else _identities(reference_runs))
    for (dataset, category, method), grp in runs.groupby(["dataset", "category", "method"], sort=True):
        matched, reason = ([], unavailable) if unavailable else _match(grp, by_key, identities)
        seeds = ",".join(str(int(s)) for s in sorted(grp["seed"]))
        for metric in table_metrics(method):
            ours = _mean(grp[metric]) if metric in grp else math.nan
            ref = _mean(r.get(metric, math.nan) for r in matched) if matched else math.nan
            if not matched and math.isnan(ours):
                continue  # unavailable here (e.g. no pixel masks) and nothing to compare: no table cell
            if not matched:
                status, why = MISSING, reason
            elif math.isnan(ours) and math.isnan(ref):
                continue
            elif math.isnan(ours) or math.isnan(ref):
                status, why = DIFFERS, "unavailable " + ("here" if math.isnan(ours) else "in the reference")
            else:
                status, why = (REPRODUCED if abs(ours - ref) <= tolerance else DIFFERS), ""
            rows.append({"dataset": dataset, "category": category, "method": method, "metric": metric,
                         "seeds": seeds, "ours": ours, "reference": ref, "diff": ours - ref, "status": status,
                         "reason": why, "tolerance": tolerance})
    return Comparison(pd.DataFrame(rows, columns=list(COLUMNS)), tolerance, reference)


def read_comparison(csv_path: Path | str) -> Comparison | None:
    """The comparison the report wrote (``<results>/tables/reference_comparison.csv``), or None when absent."""
    path = Path(csv_path)
    if not path.exists():
        return None
    frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    for col in ("ours", "reference", "diff"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    tol = float(frame["tolerance"].iloc[0]) if len(frame) else TOLERANCE
    return Comparison(frame, tol)
