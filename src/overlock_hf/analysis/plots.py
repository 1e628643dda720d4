"""The speed-accuracy picture of the OverLoCK supplement (section C): measured throughput against top-1."""

from __future__ import annotations

from pathlib import Path

from .ablations import paper_figures
from .peers import PEERS, peer_key


def published_top1(model: str) -> float | None:
    """ImageNet-1K top-1 (%) published for a variant (OverLoCK paper) or a peer (its own paper), else None."""
    variants = paper_figures()["variants"]
    if model in variants:
        return variants[model]["top1"]
    key = peer_key(model)
    return PEERS[key]["published"]["top1"] if key else None


def speed_accuracy_plot(rows: list[dict], path: str | Path, title: str) -> Path:
    """Scatter of `images_per_s` (x) against the published top-1 (y) for the rows that have both; OverLoCK's
    variants joined by a line, each family in its own colour. Writes a PNG to `path` and returns it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError("the speed-accuracy plot needs matplotlib: pip install overlock-hf[analysis]") from error
    families: dict[str, list[tuple[float, float, str]]] = {}
    for row in rows:
        top1 = published_top1(row["model"])
        if top1 is None or row.get("images_per_s") is None:
            continue
        family = row["model"].split("-")[0]
        families.setdefault(family, []).append((row["images_per_s"], top1, row["model"]))
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    for family, points in sorted(families.items()):
        points.sort(key=lambda point: point[1])  # by top-1: a family's variants in size order
        xs, ys, names = zip(*points)
        style = "o-" if family == "overlock" else "s"
        axes.plot(xs, ys, style, label=family, markersize=6, linewidth=1.5)
        for x, y, name in points:
            axes.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    axes.set_xlabel("measured throughput (images/s)")
    axes.set_ylabel("published ImageNet-1K top-1 (%)")
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(temporary)
    plt.close(figure)
    temporary.replace(path)
    return path
