"""Reproduced vs reference: every table cell of a results tree against the committed reference results.

The project commits curated results under ``results/reference/`` (per run ``config.json``, ``metrics.json``,
``losses.csv``, ``calibration.json``, ``splits.json``; the tables and REPORT.md made from them; ``make reference``
refreshes it, :func:`avaga_lib.reporting.report.refresh_reference`). ``make reproduce`` writes its own tree and reads
the reference only here, never as runs. :func:`compare_with_reference` states, per table cell (dataset, category,
method, metric: the mean over the seeds run here, against the reference's mean over the same seeds), one of:

- ``reproduced exactly``: |ours - reference| <= :data:`TOLERANCE` (1e-6), on whatever machine;
- ``within seed spread``: beyond the tolerance, on another machine (or a GPU), and
  |ours - reference| <= :data:`SPREAD_Z` * s * sqrt(2 / n), where s is the sample standard deviation (denominator
  k - 1) of that metric over the k >= 2 reference runs of the cell's config, seeds aside (all of them, not only the
  seeds run here), and n the number of seeds in the cell: two standard deviations of the difference between two
  independent n-seed means, because on another CPU each run's trajectory leaves the reference's at the first epoch
  and behaves like a draw of another seed;
- ``differs``: beyond that margin; beyond the tolerance on the same CPU machine (where a run is bit-reproducible, so
  any difference is real); or on another machine when the reference holds one seed of the cell (reason
  ``no seed spread measured``); or a value missing on one side;
- ``not in reference``: the reference holds no run of that cell with the same config (profile, seed, image size,
  epochs, threads, every other setting, and the encoder initialisation); the reason names the first keys that
  differ.

The machine of a run is what its ``metrics.json`` records under :data:`MACHINE_KEYS`: the device, the ATen CPU
capability (the instruction set PyTorch's CPU kernels dispatch to, e.g. AVX2, AVX512) and the torch version. Two runs
are on the same machine when each key is equal on both sides or recorded on neither (older runs record only the
device; the ``machine`` column says which keys were not recorded); a key recorded on one side only counts as another
machine. A CPU run at a fixed thread count is bit-reproducible on the same machine only: another instruction set
changes float summation order, so ``losses.csv`` already differs at the first epoch and the 1e-6 tolerance cannot
hold there. GPU kernels are not all deterministic, so a GPU run on either side is judged by the seed spread too.

:meth:`Comparison.exit_code` makes ``--strict`` (``make reproduce STRICT=1``) fail the command when any cell is not
reproduced exactly (within seed spread or differs); without it the comparison never changes the exit status.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from avaga_lib.reporting.tables import table_metrics
from avaga_lib.run_folder import RunFolder

TOLERANCE = 1e-6
SPREAD_Z = 2.0  # standard deviations of the difference of two n-seed means still counted as seed spread
CSV_NAME = "reference_comparison.csv"  # written under <results>/tables/
SECTION = "Reproduced vs reference"  # REPORT.md heading; its anchor is ANCHOR
ANCHOR = "reproduced-vs-reference"
REPRODUCED, WITHIN_SPREAD, DIFFERS, MISSING = "reproduced exactly", "within seed spread", "differs", "not in reference"
NO_SPREAD = "no seed spread measured"  # the reason of a cross-machine difference against a single reference seed
LEGACY_STATUS = {"reproduced": REPRODUCED}  # comparison CSVs written before the three-way comparison (issue 22)
STRICT_EXIT = 1  # exit status of a strict comparison with a cell not reproduced exactly
# What a run's metrics.json records of the machine that made it (run.py; missing in runs older than issue 22).
MACHINE_KEYS = ("device", "cpu_capability", "torch_version")
# Config keys that say where things are or how a run is checkpointed, not what it computes.
IGNORED_KEYS = frozenset({"results_dir", "data.root", "train.resume", "train.checkpoint_every", "train.log_every"})
SEED_KEY = "train.seed"  # what varies between the runs whose spread is measured
COLUMNS = ("dataset", "category", "method", "metric", "seeds", "ours", "reference", "diff", "status", "reason",
           "machine", "seed_sd", "ref_seeds", "margin", "tolerance")
MAX_ROWS = 50  # cells not reproduced exactly listed in REPORT.md (all of them are in the CSV)


@dataclass(frozen=True)
class MachineMatch:
    """How the machines of a cell's runs compare with those of its reference runs (seed by seed)."""

    same: bool  # every key of MACHINE_KEYS equal on both sides, or recorded on neither
    exact: bool  # same, and a CPU (or a device not recorded): bit reproduction expected, the tolerance holds
    text: str  # for the ``machine`` column, e.g. "another machine: cpu_capability 'AVX2' here, 'AVX512' in ..."


@dataclass
class Comparison:
    """The outcome per table cell (``frame``, columns :data:`COLUMNS`) and where the reference was read."""

    frame: pd.DataFrame
    tolerance: float = TOLERANCE
    reference: str = "results/reference"

    def count(self, status: str) -> int:
        """Cells with ``status``."""
        return int((self.frame["status"] == status).sum()) if len(self.frame) else 0

    def no_spread(self) -> int:
        """Differing cells on another machine whose reference holds a single seed (no seed spread measured)."""
        if not len(self.frame):
            return 0
        differ = self.frame[self.frame["status"] == DIFFERS]
        return sum(str(r).startswith(NO_SPREAD) for r in differ["reason"])

    def not_exact(self) -> int:
        """Cells the reference holds that are not reproduced exactly (within seed spread or differs): what
        ``--strict`` fails on."""
        return self.count(WITHIN_SPREAD) + self.count(DIFFERS)

    def exit_code(self, strict: bool = False) -> int:
        """:data:`STRICT_EXIT` when ``strict`` and a cell is not reproduced exactly, else 0.

        Without ``strict`` the comparison is a report, never a failure: a fresh machine with another CPU instruction
        set is expected to differ (module docstring), and ``make reproduce`` must still succeed there.
        """
        return STRICT_EXIT if strict and self.not_exact() else 0

    @property
    def max_abs_diff(self) -> float:
        """Largest |ours - reference| over the differing cells with both values (NaN when none)."""
        diffs = self.frame.loc[self.frame["status"] == DIFFERS, "diff"].abs().dropna() if len(self.frame) else []
        return float(max(diffs)) if len(diffs) else math.nan

    def top_reason(self) -> str:
        """The most frequent reason a cell is not in the reference ("" when every cell is)."""
        missing = self.frame[self.frame["status"] == MISSING] if len(self.frame) else self.frame
        return str(missing["reason"].value_counts().index[0]) if len(missing) else ""

    def _differ_text(self) -> str:
        """``127 differ (max |diff| 0.0879; 127 with no seed spread measured)``."""
        notes = [] if math.isnan(self.max_abs_diff) else [f"max |diff| {self.max_abs_diff:.3g}"]
        if self.no_spread():
            notes.append(f"{self.no_spread()} with {NO_SPREAD}")
        return f"{self.count(DIFFERS)} differ" + (f" ({'; '.join(notes)})" if notes else "")

    def summary_line(self, report_md: str = "results/REPORT.md", strict: bool = False) -> str:
        """One line for the terminal, e.g. ``reference: 188/315 cells reproduced exactly, 0 within seed spread,
        127 differ (max |diff| 0.0879; 127 with no seed spread measured), 0 not in reference; see
        results/REPORT.md#reproduced-vs-reference``; with ``strict`` and a cell not reproduced exactly it ends with
        the exit status that causes."""
        missing = self.count(MISSING)
        line = (f"reference: {self.count(REPRODUCED)}/{len(self.frame)} cells {REPRODUCED}, "
                f"{self.count(WITHIN_SPREAD)} {WITHIN_SPREAD}, {self._differ_text()}, {missing} not in reference")
        if missing:
            line += f" (e.g. {_shorten(self.top_reason(), 90)})"
        line += f"; see {report_md}#{ANCHOR}"
        if self.exit_code(strict):
            line += f"; STRICT: {self.not_exact()} cells not {REPRODUCED}, exit {STRICT_EXIT}"
        return line

    def markdown(self) -> str:
        """The REPORT.md section (heading included)."""
        lines = [f"## {SECTION}", "",
                 f"Each table cell (dataset, category, method, metric; the mean over the seeds run here) against the "
                 f"committed reference `{self.reference}` (refreshed with `make reference`), the reference's mean "
                 f"taken over the same seeds. **{REPRODUCED}**: |ours - reference| <= {self.tolerance:g}, on any "
                 "machine. A CPU run at a fixed thread count is bit-reproducible on one machine only (same device, "
                 "ATen CPU capability and torch version, as each run's `metrics.json` records them; keys recorded on "
                 "neither side count as equal): another CPU instruction set changes float summation order from the "
                 "first epoch, and GPU kernels are not all deterministic. So a difference beyond the tolerance on "
                 "another machine or a GPU is **within seed spread** when |ours - reference| <= "
                 f"{SPREAD_Z:g} s sqrt(2/n): s the sample standard deviation (denominator k - 1) of that metric over "
                 "the k >= 2 reference seeds of the cell's config (all of them, not only the seeds run here), n the "
                 "seeds of the cell; i.e. two standard deviations of the difference of two independent n-seed means, "
                 "as each run on another machine behaves like a draw of another seed; "
                 f"**{DIFFERS}** beyond it, with a single reference "
                 f"seed (\"{NO_SPREAD}\"), on the same CPU machine, or when one side has no value; "
                 f"**{MISSING}** when the reference holds no run with the same config (profile, seed, image size, "
                 "epochs, threads, every other setting and the encoder initialisation). `make reproduce STRICT=1` "
                 f"fails when a cell is not {REPRODUCED}. Every cell: `tables/{CSV_NAME}`.", "",
                 f"**{self.count(REPRODUCED)} of {len(self.frame)} cells {REPRODUCED}, {self.count(WITHIN_SPREAD)} "
                 f"{WITHIN_SPREAD}, {self._differ_text()}, {self.count(MISSING)} not in reference.**", ""]
        compared = self.frame[self.frame["status"] != MISSING] if len(self.frame) else self.frame
        if len(compared) and "machine" in compared:
            lines += ["Machines (here against the reference):", ""]
            lines += [f"- {count} cells: {text}" for text, count in compared["machine"].value_counts().items()]
            lines.append("")
        off = self.frame[self.frame["status"].isin([WITHIN_SPREAD, DIFFERS])] if len(self.frame) else self.frame
        if len(off):
            off = off.assign(_abs=off["diff"].abs().fillna(math.inf)).sort_values("_abs", ascending=False)
            lines += ["| dataset | category | method | metric | seeds | ours | reference | ours - reference | "
                      "seed-spread margin | status |", "|---|---|---|---|---|---|---|---|---|---|"]
            for _, r in off.head(MAX_ROWS).iterrows():
                why = str(r["reason"]) if isinstance(r["reason"], str) and r["reason"] else ""
                lines.append(f"| {r['dataset']} | {r['category']} | {r['method']} | {r['metric']} | {r['seeds']} | "
                             f"{_num(r['ours'])} | {_num(r['reference'])} | {_num(r['diff'])} | "
                             f"{_num(r.get('margin'))} | {r['status']}" + (f" ({why})" if why else "") + " |")
            if len(off) > MAX_ROWS:
                lines.append(f"\n({len(off) - MAX_ROWS} more cells not {REPRODUCED} in `tables/{CSV_NAME}`)")
            lines.append("")
        missing = self.frame[self.frame["status"] == MISSING] if len(self.frame) else self.frame
        if len(missing):
            lines += ["Not in reference:", ""]
            lines += [f"- {count} cells: {reason}" for reason, count in missing["reason"].value_counts().items()]
            lines.append("")
        return "\n".join(lines)


def _num(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "—"
    return "—" if math.isnan(number) else f"{number:.6g}"


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


def _metrics(run_dir: Path) -> dict[str, Any]:
    folder = RunFolder(run_dir)
    metrics = folder.metrics() if folder.is_finished() else {}
    return metrics if isinstance(metrics, dict) else {}


def run_identity(run_dir: Path | str, notes: Iterable[str] = ()) -> dict[str, Any]:
    """What decides a run's numbers, the machine aside: its config (flattened, legacy keys dropped,
    :data:`IGNORED_KEYS` left out) and how its encoder was initialised (the run's ``pretrained_source`` note).

    The device is not part of it (issue 22): it is one of the run's :func:`recorded_machine`, so a run on another
    device is compared by the seed spread instead of being "not in reference".

    Raises:
        ValueError: ``config.json`` missing or not a run config (the message names the file).
    """
    folder = RunFolder(run_dir)
    if not folder.config_path.exists():
        raise ValueError(f"{folder.config_path} missing: a reference run needs its config.json beside metrics.json")
    cfg = folder.load_config()
    identity = {k: v for k, v in _flatten(asdict(cfg)).items() if k not in IGNORED_KEYS}
    sources = [n.split("=", 1)[1] for n in notes if str(n).startswith("pretrained_source=")]
    identity["record.pretrained_source"] = sources[0] if sources else None
    return identity


def recorded_machine(run_dir: Path | str) -> dict[str, str | None]:
    """:data:`MACHINE_KEYS` of a run's ``metrics.json`` as strings (written by
    :func:`avaga_lib.training.run.machine_record`);
    None where not recorded (runs before issue 22 record only the device)."""
    metrics = _metrics(Path(run_dir))
    # run.py writes "unknown" where torch cannot say its CPU capability: that says nothing about the machine either
    return {k: None if metrics.get(k) in (None, "", "unknown") else str(metrics[k]) for k in MACHINE_KEYS}


def compare_machines(ours: Sequence[dict[str, str | None]], refs: Sequence[dict[str, str | None]]) -> MachineMatch:
    """The machines of a cell's runs (sorted by seed) against those of its reference runs (the same seeds).

    A key recorded on one side only is another machine: nothing says the unrecorded side ran on the same one.
    """
    differences: list[str] = []
    unrecorded: list[str] = []
    for here, there in zip(ours, refs):
        for key in MACHINE_KEYS:
            a, b = here.get(key), there.get(key)
            if a is None and b is None:
                unrecorded += [key] if key not in unrecorded else []
            elif a != b:
                text = f"{key} {_recorded(a)} here, {_recorded(b)} in the reference"
                differences += [text] if text not in differences else []
    if differences:
        return MachineMatch(False, False, "another machine: " + "; ".join(differences))
    first = ours[0] if ours else {}
    recorded = ", ".join(str(first[k]) for k in MACHINE_KEYS if first.get(k) is not None)
    text = "same machine" + (f" ({recorded})" if recorded else "")
    if unrecorded:
        text += f"; {', '.join(unrecorded)} not recorded on either side"
    # only a CPU run is bit-reproducible on its machine (GPU kernels are not all deterministic); a run that records
    # no device is taken for a CPU run, as nothing says otherwise and the CPU is the default
    exact = all(here.get("device") in (None, "cpu") for here in ours)
    return MachineMatch(True, exact, text)


def _recorded(value: str | None) -> str:
    return "not recorded" if value is None else repr(value)


def _config_difference(ours: dict[str, Any], ref: dict[str, Any], n: int = 3) -> str:
    """"train.threads 1 here, 0 in the reference; ..." for the first ``n`` keys that differ ("" when none)."""
    keys = sorted(k for k in set(ours) | set(ref) if ours.get(k) != ref.get(k))
    parts = [f"{k} {ours.get(k)!r} here, {ref.get(k)!r} in the reference" for k in keys[:n]]
    return "; ".join(parts) + (f"; {len(keys) - n} more" if len(keys) > n else "")


def _match(grp: pd.DataFrame, reference: dict[tuple[str, str, str, int], pd.Series],
           identities: dict[str, dict[str, Any]]) -> tuple[list[pd.Series], str]:
    """The reference runs of a cell's seeds (sorted by seed) with the same identity, or ([], the reason there are
    none)."""
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


def _values(values: Iterable[Any]) -> list[float]:
    return [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]


def _mean(values: Iterable[Any]) -> float:
    vals = _values(values)
    return sum(vals) / len(vals) if vals else math.nan


def _identities(runs: pd.DataFrame) -> dict[str, dict[str, Any]]:
    return {str(r["run_dir"]): run_identity(r["run_dir"], r.get("notes", ())) for _, r in runs.iterrows()}


def _seed_runs(matched: list[pd.Series], candidates: list[pd.Series],
               identities: dict[str, dict[str, Any]]) -> list[pd.Series]:
    """The reference runs whose spread is measured: every seed of the matched runs' config (not only the seeds run
    here, so that one seed run here is still judged against the reference's spread)."""
    def unseeded(run: pd.Series) -> dict[str, Any]:
        return {k: v for k, v in identities[str(run["run_dir"])].items() if k != SEED_KEY}

    base = unseeded(matched[0])
    return [r for r in candidates if unseeded(r) == base]


def _judge(diff: float, tolerance: float, machine: MachineMatch, margin: float, ref_seeds: int) -> tuple[str, str]:
    """Status and reason of a cell with a value on both sides (rules in the module docstring)."""
    if abs(diff) <= tolerance:
        return REPRODUCED, ""
    if machine.exact:
        return DIFFERS, "same CPU machine, where a run is bit-reproducible: beyond the tolerance"
    if ref_seeds < 2:
        return DIFFERS, f"{NO_SPREAD}: {ref_seeds} reference seed"
    if abs(diff) <= margin:
        return WITHIN_SPREAD, ""
    return DIFFERS, f"beyond the seed spread of {ref_seeds} reference seeds"


def compare_with_reference(runs: pd.DataFrame, reference_runs: pd.DataFrame, tolerance: float = TOLERANCE,
                           reference: str = "results/reference", unavailable: str = "") -> Comparison:
    """Every table cell of ``runs`` (from :func:`avaga_lib.reporting.results.collect_runs`) against ``reference_runs``.

    Per cell the status follows the module docstring: ``reproduced exactly`` within ``tolerance``; beyond it on the
    same CPU machine ``differs``; on another machine or a GPU ``within seed spread`` when |diff| <= :data:`SPREAD_Z` * s
    * sqrt(2 / n) (columns ``seed_sd`` = s over ``ref_seeds`` reference seeds, ``margin``), else ``differs`` (reason
    ``no seed spread measured`` with one reference seed).

    Args:
        runs: the runs of this results tree. reference_runs: the runs of the reference tree (may be empty).
        tolerance: largest |ours - reference| still counted as reproduced exactly. reference: where the reference was
        read (shown in the text). unavailable: why there is no reference at all (every cell gets it as its reason); "" =
        there is one.

    Raises:
        ValueError: a run folder without a readable config.json.
    """
    rows: list[dict[str, Any]] = []
    if runs.empty:
        return Comparison(pd.DataFrame(columns=list(COLUMNS)), tolerance, reference)
    by_key = {} if reference_runs.empty else {
        (r["dataset"], r["category"], r["method"], int(r["seed"])): r for _, r in reference_runs.iterrows()}
    by_cell: dict[tuple[str, str, str], list[pd.Series]] = {}
    for key, ref_run in by_key.items():
        by_cell.setdefault(key[:3], []).append(ref_run)
    identities = _identities(runs) | ({} if reference_runs.empty else _identities(reference_runs))
    for (dataset, category, method), grp in runs.groupby(["dataset", "category", "method"], sort=True):
        matched, reason = ([], unavailable) if unavailable else _match(grp, by_key, identities)
        seeds = ",".join(str(int(s)) for s in sorted(grp["seed"]))
        machine = MachineMatch(False, False, "")
        spread_runs: list[pd.Series] = []
        if matched:
            machine = compare_machines([recorded_machine(d) for d in grp.sort_values("seed")["run_dir"]],
                                       [recorded_machine(r["run_dir"]) for r in matched])
            spread_runs = _seed_runs(matched, by_cell[(dataset, category, method)], identities)
        for metric in table_metrics(method):
            ours_values = _values(grp[metric]) if metric in grp else []
            ours = _mean(ours_values)
            ref = _mean(r.get(metric, math.nan) for r in matched) if matched else math.nan
            spread = _values(r.get(metric, math.nan) for r in spread_runs)
            sd = statistics.stdev(spread) if len(spread) >= 2 else math.nan
            margin = SPREAD_Z * sd * math.sqrt(2 / len(ours_values)) if ours_values else math.nan
            if not matched and math.isnan(ours):
                continue  # unavailable here (e.g. no pixel masks) and nothing to compare: no table cell
            if not matched:
                status, why = MISSING, reason
            elif math.isnan(ours) and math.isnan(ref):
                continue
            elif math.isnan(ours) or math.isnan(ref):
                status, why = DIFFERS, "unavailable " + ("here" if math.isnan(ours) else "in the reference")
            else:
                status, why = _judge(ours - ref, tolerance, machine, margin, len(spread))
            rows.append({"dataset": dataset, "category": category, "method": method, "metric": metric,
                         "seeds": seeds, "ours": ours, "reference": ref, "diff": ours - ref, "status": status,
                         "reason": why, "machine": machine.text, "seed_sd": sd, "ref_seeds": len(spread),
                         "margin": margin, "tolerance": tolerance})
    return Comparison(pd.DataFrame(rows, columns=list(COLUMNS)), tolerance, reference)


def read_comparison(csv_path: Path | str) -> Comparison | None:
    """The comparison the report wrote (``<results>/tables/reference_comparison.csv``), or None when absent.

    A CSV written before the three-way comparison (no ``machine`` column, status ``reproduced``) still reads:
    its statuses are mapped by :data:`LEGACY_STATUS` and the new columns are left empty.
    """
    path = Path(csv_path)
    if not path.exists():
        return None
    frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    for col in COLUMNS:
        if col not in frame:
            frame[col] = math.nan
    for col in ("ours", "reference", "diff", "seed_sd", "ref_seeds", "margin"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    frame["status"] = frame["status"].replace(LEGACY_STATUS)
    frame["reason"] = ["" if pd.isna(r) else str(r) for r in frame["reason"]]  # an all-empty column reads as float
    tol = float(frame["tolerance"].iloc[0]) if len(frame) else TOLERANCE
    return Comparison(frame, tol)
