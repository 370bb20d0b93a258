"""Diagnostics of a synthesis stream: what its samples look like, next to the real training boxes.

:class:`SampleStats` gathers, per rendered sample, the objects per image, each label box's side
(``sqrt(w * h)`` over ``sqrt(W * H)``, i.e. the square root of its area fraction, so square and
non-square images compare), aspect ratio ``w / h``, visible fraction and class. :func:`real_stats`
gathers the same from real box-labelled data. :func:`write_stats` writes them as histograms, synthetic and
real side by side, to ``stats.png`` (matplotlib) and ``stats.json`` with the stream's counters
(hidden objects dropped, positions redrawn, objects left out, distractors, empty masks).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..utils.files import atomic_write_text

# Histogram bins of each quantity (aspect on a log scale).
_BINS: dict[str, np.ndarray] = {
    "side": np.linspace(0.0, 1.0, 21),
    "aspect": np.geomspace(0.125, 8.0, 25),
    "visible": np.linspace(0.0, 1.0, 21),
}
_TITLES = {"count": "objects per image", "side": "box side / image side (sqrt area fraction)",
           "aspect": "aspect ratio w / h", "visible": "visible fraction", "classes": "objects per class"}


class SampleStats:
    """Accumulates the label statistics of samples (``add(sample)``; ``summary()`` -> dict)."""

    def __init__(self, class_names: Sequence[str]) -> None:
        self.class_names = list(class_names)
        self.count: list[int] = []
        self.side: list[float] = []
        self.aspect: list[float] = []
        self.visible: list[float] = []
        self.labels: list[int] = []

    def add(self, sample: Any) -> None:
        """One :class:`~synthdet.synthesis.stream.SynthSample` (XYXY boxes, 1-based labels)."""
        h, w = sample.image.shape[:2]
        self._boxes(np.asarray(sample.boxes, np.float64).reshape(-1, 4), w, h)
        self.visible.extend(float(v) for v in np.asarray(sample.visible).reshape(-1))
        self.labels.extend(int(v) for v in np.asarray(sample.labels).reshape(-1))

    def _boxes(self, boxes: np.ndarray, width: int, height: int) -> None:
        bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        ok = (bw > 0) & (bh > 0)
        self.count.append(int(len(boxes)))
        self.side.extend(np.sqrt(bw[ok] * bh[ok] / (width * height)).tolist())
        self.aspect.extend((bw[ok] / bh[ok]).tolist())

    def summary(self) -> dict[str, Any]:
        """Histograms (``edges``, ``counts``) and mean / median of each quantity, class counts."""
        out: dict[str, Any] = {"images": len(self.count), "objects": int(sum(self.count))}
        top = max(self.count, default=0)
        bins = {"count": np.arange(-0.5, top + 1.5), **_BINS}
        for name, edges in bins.items():
            values = np.asarray(getattr(self, name), np.float64)
            counts, _ = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)
            out[name] = {"edges": [float(e) for e in edges], "counts": counts.tolist(),
                         "mean": float(values.mean()) if values.size else None,
                         "median": float(np.median(values)) if values.size else None}
        names = self.class_names or [str(k) for k in sorted(set(self.labels))]
        out["classes"] = {n: int(sum(1 for v in self.labels if v == k + 1)) for k, n in enumerate(names)}
        return out


def stream_stats(stream: Any, count: int) -> dict[str, Any]:
    """Render samples ``stream.start .. + count - 1`` and return :meth:`SampleStats.summary` with
    the stream's counters (``stream.stats``: dropped, retries, rejected, distractors, ...)."""
    stats = SampleStats(stream.class_names)
    for i in range(count):
        stats.add(stream.render(stream.start + i))
    return {**stats.summary(), "counters": dict(stream.stats)}


def records_stats(records: Sequence[Any], class_names: Sequence[str]) -> dict[str, Any]:
    """:meth:`SampleStats.summary` of real :class:`~synthdet.datasets.records.DetectionRecord` s
    (XYXY boxes, 1-based labels; every object counts as fully visible)."""
    stats = SampleStats(class_names)
    for rec in records:
        boxes = np.asarray(rec.boxes, np.float64).reshape(-1, 4)
        stats._boxes(boxes, rec.width, rec.height)
        stats.visible.extend([1.0] * len(boxes))
        stats.labels.extend(int(v) for v in np.asarray(rec.labels).reshape(-1))
    return stats.summary()


def real_stats(path: str | os.PathLike, fmt: str = "coco") -> dict[str, Any]:
    """:func:`records_stats` of a real dataset read with ``read_dataset(fmt, path)``."""
    from ..datasets import read_dataset

    records, categories = read_dataset(fmt, path)
    return records_stats(records, [categories[k] for k in sorted(categories)])


def write_stats(synthetic: dict[str, Any], out_dir: str | os.PathLike, real: dict[str, Any] | None = None,
                name: str = "stats") -> tuple[Path, Path]:
    """Write ``{name}.json`` (``{"synthetic": ..., "real": ...}``) and ``{name}.png`` (one panel
    per quantity, synthetic and real histograms as fractions side by side) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out / f"{name}.json", out / f"{name}.png"
    atomic_write_text(json_path, json.dumps({"synthetic": synthetic, "real": real}, indent=1))
    _plot(synthetic, real, png_path)
    return png_path, json_path


def _plot(synthetic: dict[str, Any], real: dict[str, Any] | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 5, figsize=(22, 3.8))
    runs = [("synthetic", synthetic, "tab:blue")] + ([("real", real, "tab:orange")] if real else [])
    for ax, key in zip(axes[:4], ("count", "side", "aspect", "visible")):
        for k, (label, data, color) in enumerate(runs):
            edges, counts = np.asarray(data[key]["edges"]), np.asarray(data[key]["counts"], float)
            frac = counts / max(counts.sum(), 1.0)
            width = np.diff(edges) / len(runs)
            ax.bar(edges[:-1] + k * width, frac, width=width, align="edge", color=color, alpha=0.8,
                   label=f"{label} (n={int(counts.sum())})")
        if key == "aspect":
            ax.set_xscale("log")
            ticks = [0.125, 0.25, 0.5, 1, 2, 4, 8]
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.minorticks_off()
        ax.set_title(_TITLES[key], fontsize=9)
        ax.legend(fontsize=7)
    ax = axes[4]
    names = sorted(set(synthetic["classes"]) | set(real["classes"] if real else []))
    x = np.arange(len(names))
    for k, (label, data, color) in enumerate(runs):
        total = max(sum(data["classes"].values()), 1)
        ax.bar(x + k * 0.8 / len(runs), [data["classes"].get(n, 0) / total for n in names],
               width=0.8 / len(runs), align="edge", color=color, alpha=0.8, label=label)
    ax.set_xticks(x + 0.4, names, rotation=45, ha="right", fontsize=7)
    ax.set_title(_TITLES["classes"], fontsize=9)
    c = synthetic.get("counters", {})
    fig.suptitle(f"{synthetic['images']} synthetic images, {synthetic['objects']} labelled objects; "
                 f"hidden objects dropped {c.get('dropped', 0)}, positions redrawn {c.get('retries', 0)}, "
                 f"objects left out {c.get('rejected', 0)}, distractors {c.get('distractors', 0)}, "
                 f"empty masks {c.get('empty_masks', 0)}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
