"""`vtool data check` rendered: summary, duplicate groups and problem files as rich tables; one PNG with class
balance per split and the image size distribution."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from toolchain.report.plots import pyplot, save_figure
from toolchain.report.tables import View, _table


def check_view(result: Any, max_listed: int = 50) -> View:
    data = result.to_dict()
    stats = data["stats"]
    summary = _table(f"data check: {data['source']} ({data['layout']})", ("measure", "value"), left=("measure",))
    summary.add_row("images (decoded)", f"{stats['images']} ({stats['decoded']})")
    for split, counts in stats["per_split"].items():
        summary.add_row(f"{split} per class", ", ".join(f"{k}: {v}" for k, v in counts.items()))
    summary.add_row("imbalance (largest / smallest class)", f"{stats['imbalance']}")
    summary.add_row("modes", ", ".join(f"{k}: {v}" for k, v in stats["modes"].items()))
    summary.add_row("sizes (most common)", ", ".join(f"{k}: {v}" for k, v in list(stats["sizes"].items())[:5]))
    for axis in ("width", "height"):
        if stats[axis]:
            summary.add_row(axis, "min {min}, median {median:g}, max {max}".format(**stats[axis]))
    summary.add_row("exact duplicate groups (across splits)",
                    f"{len(data['exact_duplicates'])} ({data['leaks']['exact']})")
    summary.add_row("near duplicate groups (across splits)",
                    f"{len(data['near_duplicates'])} ({data['leaks']['near']})")
    parts = [part for row in data["problems"] for part in row["problem"].split(", ")]
    kinds = Counter(part.split(" (")[0].split(":")[0] for part in parts)
    by_kind = ", ".join(f"{kind}: {count}" for kind, count in kinds.items())
    summary.add_row("problem files", f"{len(data['problems'])}" + (f" ({by_kind})" if by_kind else ""))
    view: View = [summary]
    if stats["width"] and min(stats["width"]["median"], stats["height"]["median"]) < 32:
        view.append("[yellow]note[/]: images under 32 px give coarse perceptual hashes; near duplicates may be "
                    "look-alikes rather than copies (exact duplicates are exact).")
    groups = [("exact", g) for g in data["exact_duplicates"]] + [("near", g) for g in data["near_duplicates"]]
    if groups:
        table = _table("duplicates (cross-split first)", ("kind", "files (split/class)", "leak", "label conflict"),
                       left=("kind", "files (split/class)"))
        ordered = sorted(groups, key=lambda kg: (not kg[1]["cross_split"], kg[0] != "exact"))
        for kind, group in ordered[:max_listed]:
            files = "  ".join(f"{m['file']} ({m['split']}/{m['class']})" for m in group["members"])
            table.add_row(kind, files, "LEAK" if group["cross_split"] else "", "yes" if group["label_conflict"] else "")
        view.append(table)
        if len(groups) > max_listed:
            view.append(f"... and {len(groups) - max_listed} more groups (all in --json)")
    if data["problems"]:
        table = _table("problem files", ("file", "split", "problem"), left=("file", "split", "problem"))
        for row in data["problems"][:max_listed]:
            table.add_row(row["file"], row["split"], row["problem"])
        view.append(table)
    return view


def check_plot(result: Any, path: str | Path) -> Path:
    """Images per class and split (stacked bars) and the width x height scatter."""
    import numpy as np

    plt = pyplot()
    stats = result.stats()
    classes = list(stats["classes"])
    fig, (bars, sizes) = plt.subplots(1, 2, figsize=(11, 4))
    bottom = np.zeros(len(classes))
    for split, counts in stats["per_split"].items():
        values = np.asarray([counts.get(c, 0) for c in classes], dtype=float)
        bars.bar(range(len(classes)), values, bottom=bottom, label=split)
        bottom += values
    bars.set_xticks(range(len(classes)), labels=[c[:12] for c in classes], rotation=45 if len(classes) > 8 else 0)
    bars.set_title("images per class and split")
    bars.legend()
    dims = np.asarray([it.size for it in result.items if it.size] or [(0, 0)])
    sizes.scatter(dims[:, 0], dims[:, 1], s=8, alpha=0.5)
    sizes.set_xlabel("width")
    sizes.set_ylabel("height")
    sizes.set_title(f"image sizes ({len(dims)} decoded)")
    leaks = result.leaks
    fig.suptitle(f"{result.source}: {len(result.exact)} exact / {len(result.near)} near duplicate groups, "
                 f"{leaks['exact'] + leaks['near']} across splits")
    return save_figure(fig, path)
