"""Paper-style tables and plots, regenerated from ``results.csv`` alone.

- :func:`results_tables` -> Markdown tables, AP@0.5 x 100 as ``mean ± std`` over repeats
  (std is the sample standard deviation; a single repeat shows no ``±``); the ``blending`` and
  ``placement`` studies get a column with each variant's gain over the first variant listed.
- :func:`plot_ap_vs_n` -> Figure-3 style plot: AP vs number of real training images, with and
  without pretraining, pretrain-only as a dashed line.
- :func:`plot_val_curves` -> validation AP curves of every finetuning run.
"""

from __future__ import annotations

import csv
import logging
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Optional, Sequence

from ..utils.files import atomic_write_text
from .config import VARIANT_STUDIES
from .runner import read_results

Row = dict[str, str]
logger = logging.getLogger(__name__)


def _mean_std(values: Sequence[float]) -> tuple[float, Optional[float]]:
    m = statistics.fmean(values)
    return m, (statistics.stdev(values) if len(values) > 1 else None)


def fmt_ap(values: Sequence[float]) -> str:
    """``[0.5, 0.7] -> '60.0 ± 14.1'`` (AP x 100)."""
    if not values:
        return "–"
    m, s = _mean_std([100 * v for v in values])
    return f"{m:.1f}" if s is None else f"{m:.1f} ± {s:.1f}"


def _n_label(rows: Iterable[Row], requested: int) -> str:
    if requested == 0:
        return "0 (pretrain only)"
    if requested < 0:
        actual = sorted({int(r["n_real"]) for r in rows if int(r["n_real_requested"]) == requested})
        return f"all ({'/'.join(map(str, actual))})" if actual else "all"
    return str(requested)


def aggregate(rows: Sequence[Row]) -> dict[tuple[str, str, str, int], list[float]]:
    """(study, detector, variant, n_real_requested) -> AP values over repeats."""
    groups: dict[tuple[str, str, str, int], list[float]] = defaultdict(list)
    for r in rows:
        groups[(r["study"], r["detector"], r["variant"], int(r["n_real_requested"]))].append(float(r["ap50"]))
    return groups


def _order(values: Iterable[int]) -> list[int]:
    """Real-sample counts in table order: 0, then ascending, then -1 (all)."""
    vals = set(values)
    return sorted(v for v in vals if v >= 0) + ([-1] if -1 in vals else [])


def results_tables(rows: Sequence[Row]) -> str:
    """One Markdown table per (study, detector): variants x number of real images."""
    groups = aggregate(rows)
    out: list[str] = []
    for study, det in sorted({(k[0], k[1]) for k in groups}):
        keys = [k for k in groups if k[0] == study and k[1] == det]
        ns = _order(k[3] for k in keys)
        variants = list(dict.fromkeys(r["variant"] for r in rows if r["study"] == study and r["detector"] == det))
        ref = next((v for v in variants if v != "no_pretraining"), None) if study in VARIANT_STUDIES else None
        out.append(f"### {study} — {det} (AP@0.5 × 100, mean ± std over repeats)\n")
        out.append("| variant | " + " | ".join(_n_label(rows, n) for n in ns) + " |"
                   + (f" vs {ref} |" if ref else ""))
        out.append("|---|" + "---|" * (len(ns) + bool(ref)))
        for v in variants:
            cells = [fmt_ap(groups.get((study, det, v, n), [])) for n in ns]
            if ref:
                cells.append(" / ".join(_gain(groups.get((study, det, v, n), []), groups.get((study, det, ref, n), []))
                                        for n in ns))
            out.append(f"| {v} | " + " | ".join(cells) + " |")
        out.append("")
        saved = labels_saved(rows, study, det)
        if saved:
            out.append(saved + "\n")
    return "\n".join(out)


def _gain(values: Sequence[float], reference: Sequence[float]) -> str:
    """Difference of mean AP x 100 (``'+2.5'``), ``'–'`` when either side is missing."""
    if not values or not reference:
        return "–"
    return f"{100 * (statistics.fmean(values) - statistics.fmean(reference)):+.1f}"


def labels_saved(rows: Sequence[Row], study: str, detector: str) -> Optional[str]:
    """Label savings: for each N, the largest number of real images M the baseline needed to do no
    better than the pretrained model with N ("pretrained with N matches the baseline trained on M")."""
    groups = aggregate(rows)
    n_all = max((int(r["n_real"]) for r in rows if r["study"] == study and r["detector"] == detector), default=0)

    def mean_by_n(variant: str) -> list[tuple[int, float]]:
        return sorted((n_all if n < 0 else n, statistics.fmean(v)) for (s, d, var, n), v in groups.items()
                      if s == study and d == detector and var == variant and n != 0)

    base, pre = mean_by_n("no_pretraining"), mean_by_n("pretrained")
    if not base or not pre:
        return None
    lines = []
    for n, ap in pre:
        matched = [(m, b) for m, b in base if m > n and b <= ap]
        if matched:
            m, b = max(matched)
            lines.append(f"pretrained with **{n}** real images ({100 * ap:.1f} AP) matches the baseline trained on "
                         f"**{m}** ({100 * b:.1f} AP): {m / n:.0f}x fewer boxes")
        else:
            same = dict(base).get(n)
            vs = f"; baseline at {n}: {100 * same:.1f}" if same is not None else ""
            lines.append(f"pretrained with {n} real images ({100 * ap:.1f} AP{vs}) matches no baseline trained "
                         "on more images")
    return "Label savings: " + "; ".join(lines) + "."


def plot_ap_vs_n(rows: Sequence[Row], path: str | Path, study: str = "data_efficiency") -> Optional[Path]:
    """Figure-3-style plot; returns the path, or None if the study has no finetuned rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["study"] == study]
    if not any(int(r["n_real"]) > 0 for r in rows):
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=120)
    dets = sorted({r["detector"] for r in rows})
    for di, det in enumerate(dets):
        color = f"C{di}"
        for variant, marker, ls in (("no_pretraining", "o", ":"), ("pretrained", "s", "-")):
            pts: dict[int, list[float]] = defaultdict(list)
            for r in rows:
                if r["detector"] == det and r["variant"] == variant:
                    pts[int(r["n_real"])].append(100 * float(r["ap50"]))
            if not pts:
                continue
            xs = sorted(pts)
            means = [statistics.fmean(pts[x]) for x in xs]
            stds = [statistics.stdev(pts[x]) if len(pts[x]) > 1 else 0.0 for x in xs]
            ax.errorbar(xs, means, yerr=stds, marker=marker, ls=ls, color=color, capsize=3,
                        label=f"{det}: {'pretrained' if variant == 'pretrained' else 'no pretraining'}")
        only = [100 * float(r["ap50"]) for r in rows if r["detector"] == det and r["variant"] == "pretrain_only"]
        if only:
            ax.axhline(statistics.fmean(only), color=color, ls="--", lw=1, label=f"{det}: pretrain only")
    ax.set_xscale("log")
    ax.set_xlabel("real training images (log scale)")
    ax.set_ylabel("test AP@0.5 (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _read_curve(run_dir: Path) -> list[tuple[int, float]]:
    csv_path = run_dir / "curve.csv"
    if not csv_path.is_file():
        return []
    with open(csv_path, newline="") as f:
        pts = []
        for r in csv.DictReader(f):
            ap = r.get("val_ap") or r.get("ap50") or r.get("ap")
            if ap in (None, ""):
                continue
            try:
                pts.append((int(float(r["step"])), float(ap)))
            except (KeyError, TypeError, ValueError):
                logger.warning("%s: unreadable row %s, curve not plotted", csv_path, r)
                return []
    return pts


def plot_val_curves(out_dir: str | Path, rows: Sequence[Row], path: str | Path) -> Optional[Path]:
    """Validation AP vs iteration for every finetuning/mixed run that saved a curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [(r["run_id"], _read_curve(Path(out_dir) / "runs" / r["run_id"])) for r in rows]
    curves = [(rid, c) for rid, c in curves if c]
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=120)
    for rid, pts in curves:
        ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], lw=1, label=rid.split("__", 1)[1])
    ax.set_xlabel("iteration")
    ax.set_ylabel("validation AP@0.5 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=5, ncol=2)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


_COLUMNS = {"study": str, "detector": str, "variant": str, "n_real": int, "n_real_requested": int,
            "ap50": float, "run_id": str}


def check_rows(path: str | Path, rows: Sequence[Row]) -> None:
    """Raise ValueError naming ``path:line`` and the column when a results row cannot be read
    (missing column, empty or non-numeric value where a number belongs)."""
    for i, r in enumerate(rows):
        where = f"{path}:{i + 2}"
        for col, typ in _COLUMNS.items():
            value = r.get(col)
            if value is None or (value == "" and typ is not str):
                raise ValueError(f"{where}: no '{col}' value (is this a synthdet results.csv?)")
            try:
                typ(float(value)) if typ is int else typ(value)
            except ValueError:
                raise ValueError(f"{where}: '{col}' is {value!r}, expected a number") from None
            if typ is int and not float(value).is_integer():
                raise ValueError(f"{where}: '{col}' is {value!r}, expected an integer")


def mask_counts_table(cache_dir: str | Path) -> str:
    """Markdown table of each segmenter's masks (``counts.json`` written by ``MaskCache.prepare``):
    computed / cached / rejected by the quality gates / skipped; ``""`` when there is none."""
    import json

    lines = []
    for f in sorted(Path(cache_dir).glob("*/counts.json")):
        try:
            c = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        masks = c.get("computed", 0) + c.get("cached", 0)
        lines.append(f"| {c.get('segmenter', f.parent.name)} | {c.get('total', '')} | {masks} "
                     f"| {c.get('rejected', 0)} | {c.get('skipped', 0)} | {c.get('gates', '')} |")
    if not lines:
        return ""
    return ("\n\n## Object masks\n\n| segmenter | images | masks | rejected by the gates | unreadable | gates |\n"
            "|---|---|---|---|---|---|\n" + "\n".join(lines) + "\n")


def build_report(out_dir: str | Path) -> Path:
    """Regenerate ``OUT/report/{tables.md, ap_vs_n.png, val_curves.png}`` from ``results.csv``, and
    ``masks.md`` (each segmenter's mask counts, rejected by the quality gates) when masks were made."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise FileNotFoundError(f"{out_dir}: no such experiment folder")
    rows = read_results(out_dir)
    check_rows(out_dir / "results.csv", rows)
    rep = out_dir / "report"
    rep.mkdir(parents=True, exist_ok=True)
    tables = results_tables(rows)
    atomic_write_text(rep / "tables.md", tables)
    masks = mask_counts_table(out_dir / "mask_cache")
    if masks:
        atomic_write_text(rep / "masks.md", masks.lstrip())
    plot_ap_vs_n(rows, rep / "ap_vs_n.png")
    plot_val_curves(out_dir, rows, rep / "val_curves.png")
    return rep / "tables.md"
