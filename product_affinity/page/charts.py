"""The page's figures, drawn with matplotlib as inline SVG: no script, no network, text kept as text.

matplotlib is imported here only, when the page is built. Text stays <text> (svg.fonttype none),
so the figures are searchable, readable by screen readers and testable in a browser; the hash
salt and the empty date make the same data give the same file.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Callable

LINK_STYLE = {"factor": "-", "outcome": "--", "leading_indicator": ":"}
TYPE_COLOUR = {"north_star": "#1f4e79", "business": "#7a4f01", "product": "#2e6b30"}
RC = {"svg.fonttype": "none", "svg.hashsalt": "product-affinity", "font.family": "DejaVu Sans", "font.size": 9}


def _svg(draw: Callable, size: tuple[float, float]) -> str:
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    with rc_context(RC):
        figure = Figure(figsize=size, layout="constrained")
        draw(figure)
        out = io.StringIO()
        figure.savefig(out, format="svg", metadata={"Date": None})
    return out.getvalue()[out.getvalue().index("<svg"):]  # drop the XML prologue: the SVG sits inside HTML


def heatmap(categories: list[str], lift: dict[tuple[str, str], float]) -> str:
    """Lift of every ordered category pair (row: bought, column: also bought); the diagonal is empty."""
    import numpy as np

    grid = np.array([[lift.get((a, b), np.nan) for b in categories] for a in categories])

    def draw(figure) -> None:
        ax = figure.subplots()
        image = ax.imshow(grid, cmap="RdBu_r", vmin=0, vmax=max(2.0, float(np.nanmax(grid))))
        ax.set_xticks(range(len(categories)), categories, rotation=45, ha="right")
        ax.set_yticks(range(len(categories)), categories)
        ax.set_xlabel("... also buy (consequent)")
        ax.set_ylabel("Baskets with (antecedent) ...")
        for i, j in np.ndindex(grid.shape):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if abs(grid[i, j] - 1) > 0.6 else "black")
        figure.colorbar(image, ax=ax, label="lift (1 = independent)", shrink=0.8)

    return _svg(draw, (8, 6.5))


def _layout(nodes: list[dict]) -> dict[str, tuple[float, int]]:
    """Tidy tree: leaves side by side in declaration order, a parent centred over its children, depth downwards."""
    children = {n["id"]: [c["id"] for c in nodes if c.get("parent") == n["id"]] for n in nodes}
    place: dict[str, tuple[float, int]] = {}
    next_leaf = [0.0]

    def visit(node: str, depth: int) -> float:
        if not children[node]:
            x, next_leaf[0] = next_leaf[0], next_leaf[0] + 1
        else:
            xs = [visit(child, depth + 1) for child in children[node]]
            x = (min(xs) + max(xs)) / 2
        place[node] = (x, depth)
        return x

    visit(next(n["id"] for n in nodes if "parent" not in n), 0)
    return place


def kpi_tree(nodes: list[dict], shown: dict[str, list[str]]) -> str:
    """The KPI tree as a tree: one box per node with its lines of figures, edges styled by link."""
    place = _layout(nodes)
    width = max(x for x, _ in place.values()) + 1
    depth = max(d for _, d in place.values()) + 1

    def draw(figure) -> None:
        ax = figure.subplots()
        ax.set_xlim(-0.6, width - 0.4)
        ax.set_ylim(depth - 0.45, -0.55)
        ax.axis("off")
        for node in nodes:
            if "parent" in node:
                (x0, y0), (x1, y1) = place[node["parent"]], place[node["id"]]
                ax.plot([x0, x0, x1, x1], [y0 + 0.3, (y0 + y1) / 2 + 0.1, (y0 + y1) / 2 + 0.1, y1 - 0.3],
                        linestyle=LINK_STYLE[node["link"]], color="#888888", linewidth=1, zorder=1)
        for node in nodes:
            x, y = place[node["id"]]
            title = "\n".join(textwrap.wrap(node["name"], 20))
            ax.text(x, y - 0.08, title, ha="center", va="bottom", fontsize=8, fontweight="bold",
                    color=TYPE_COLOUR[node["type"]], zorder=3,
                    bbox={"boxstyle": "round,pad=0.5", "facecolor": "white", "edgecolor": TYPE_COLOUR[node["type"]]})
            ax.text(x, y, "\n".join(shown[node["id"]]), ha="center", va="top", fontsize=7.5, zorder=3)
        for i, (link, style) in enumerate(LINK_STYLE.items()):
            ax.plot([], [], linestyle=style, color="#888888", label=link.replace("_", " "))
        ax.legend(loc="lower right", fontsize=7, title="link to parent", title_fontsize=7, frameon=False)

    return _svg(draw, (max(10.0, 1.6 * width), 1.9 * depth + 0.6))


def backtest(rows: list[dict]) -> str:
    """Hit rate at each k, the score against the baseline, one panel per level."""
    levels = list(dict.fromkeys(r["level"] for r in rows))
    recommenders = list(dict.fromkeys(r["recommender"] for r in rows))

    def draw(figure) -> None:
        axes = figure.subplots(1, len(levels), sharey=True, squeeze=False)[0]
        for ax, level in zip(axes, levels):
            ks = sorted({r["k"] for r in rows if r["level"] == level})
            for i, who in enumerate(recommenders):
                hits = [next(r["hit_rate"] for r in rows if (r["level"], r["recommender"], r["k"]) == (level, who, k)) for k in ks]
                bars = ax.bar([k + (i - 0.5) * 0.38 for k in ks], hits, width=0.36, label=who.replace("_", " "))
                ax.bar_label(bars, labels=[f"{h:.0%}" for h in hits], fontsize=7)
            ax.set_title(f"{level} level")
            ax.set_xticks(ks, [f"top {k}" for k in ks])
            ax.set_ylim(0, 1.08)
        axes[0].set_ylabel("hit rate")
        axes[-1].legend(fontsize=7, frameon=False)

    return _svg(draw, (8, 3.2))


def trend(months: list[str], values: list[float], label: str) -> str:
    def draw(figure) -> None:
        ax = figure.subplots()
        ax.plot(months, values, marker="o", markersize=3, color=TYPE_COLOUR["north_star"])
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        ax.set_xticks(range(0, len(months), max(1, len(months) // 8)),
                      [months[i] for i in range(0, len(months), max(1, len(months) // 8))])
        ax.grid(axis="y", alpha=0.3)

    return _svg(draw, (8, 2.6))
