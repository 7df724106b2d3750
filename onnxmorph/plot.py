"""The picture of a result: channels per layer, seed against pruned, and the training curves.

matplotlib is optional (`pip install 'onnxmorph[plot]'`); without it nothing is drawn.
"""

from __future__ import annotations

import io
import os

from onnxmorph.io import write_atomic

SKIP_NOTE = "skipped: matplotlib is not installed (pip install 'onnxmorph[plot]')"


def short_name(name: str, op: str | None = None, parts: int = 2, width: int = 28) -> str:
    """The telling end of an exported layer name.

    `/stages/stages.2/body/body.0/body.0.0/Conv` → `stages.2/body.0.0`: the trailing op type
    and components that the next one repeats (`body` before `body.0`) say nothing.
    """
    pieces = [p for p in name.replace("::", "/").split("/") if p]
    if len(pieces) > 1 and op and pieces[-1] == op:
        pieces.pop()
    pieces = [p for p, after in zip(pieces, pieces[1:] + [""]) if not after.startswith(p)]
    short = "/".join(pieces[-parts:]) if pieces else name
    return short if len(short) <= width else "…" + short[-(width - 1):]


def write_structure_plot(structure: dict, path: str | os.PathLike,
                         history: list[dict] | None = None) -> bool:
    """Draw `structure` (and the training `history`, if any) to a PNG at `path`.

    Returns False, writing nothing, when matplotlib is not installed.
    """
    png = structure_plot_png(structure, history)
    if png is None:
        return False
    write_atomic(path, png)
    return True


def structure_plot_png(structure: dict, history: list[dict] | None = None) -> bytes | None:
    """The PNG's bytes (None without matplotlib): drawn before any file is opened, so a
    result's files are all written as bytes, and a failing write names the PNG itself."""
    try:
        import matplotlib  # noqa: F401  (first: a blocked `matplotlib` must stop it all)

        # The Agg canvas directly, not pyplot: no window, and the user's backend is left alone.
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None

    layers = list(structure.get("layers", {}).items())
    history = [row for row in (history or []) if "step" in row]
    width = min(max(6.0, 0.28 * len(layers) + 2.0), 24.0)
    transformer = structure.get("transformer")
    rows = 1 + bool(history) + bool(transformer)
    figure = Figure(figsize=(width, 4.5 * rows), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    panels = iter(figure.subfigures(rows, 1, squeeze=False)[:, 0] if rows > 1 else [figure])

    _draw_channels(next(panels).subplots(), layers)
    if transformer:
        _draw_transformer(next(panels).subplots(1, 2), transformer)
    if history:
        _draw_history(next(panels).subplots(), history)

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _draw_channels(ax, layers: list[tuple[str, dict]]) -> None:
    positions = range(len(layers))
    before = [info["channels_before"] for _, info in layers]
    after = [info["channels_after"] for _, info in layers]
    bar = 0.4
    ax.bar([x - bar / 2 for x in positions], before, bar, label="seed", color="#b0b7c3")
    ax.bar([x + bar / 2 for x in positions], after, bar, label="pruned", color="#2f6db5")
    ax.set_xticks(list(positions))
    ax.set_xticklabels([short_name(name, info.get("op")) for name, info in layers],
                       rotation=60, ha="right", fontsize=7)
    ax.set_xlim(-0.6, max(len(layers) - 0.4, 0.6))
    ax.set_ylabel("output channels")
    total_before, total_after = sum(before), sum(after)
    share = f" ({total_after / total_before:.0%} of channels kept)" if total_before else ""
    ax.set_title(f"Channels per layer: seed {total_before} → pruned {total_after}{share}")
    ax.legend(loc="upper left")
    ax.grid(axis="y", alpha=0.3)


def _draw_transformer(axes, transformer: dict) -> None:
    """Heads kept per attention layer (of H) and hidden units per MLP block, seed vs pruned;
    the embedding width in the title when --prune-embedding made it a group."""
    for ax, rows, unit, (before, after) in (
            (axes[0], transformer.get("attention", []), "heads", ("heads_before", "heads_after")),
            (axes[1], transformer.get("mlp", []), "MLP hidden units",
             ("units_before", "units_after"))):
        positions = range(len(rows))
        ax.bar([x - 0.2 for x in positions], [r[before] for r in rows], 0.4, label="seed",
               color="#b0b7c3")
        ax.bar([x + 0.2 for x in positions], [r[after] for r in rows], 0.4, label="pruned",
               color="#2f6db5")
        for x, row in zip(positions, rows):
            ax.annotate(f"{row[after]}/{row[before]}", (x + 0.2, row[after]), ha="center",
                        va="bottom", fontsize=7)
        ax.set_xticks(list(positions))
        # Three parts: attention layers' own names repeat per block (…/MatMul_2).
        ax.set_xticklabels([short_name(r["name"], r.get("op"), parts=3, width=36)
                            for r in rows], rotation=60, ha="right", fontsize=7)
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel(unit)
        ax.set_title(f"{unit} per {'attention layer' if before == 'heads_before' else 'block'}")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(loc="upper left")
    widths = embedding_widths(transformer)
    if widths:
        axes[1].figure.suptitle(f"Embedding width {widths}")


def embedding_widths(section: dict) -> str:
    """"64 → 48" per embedding stage (Swin has several) of a structure's transformer section,
    "" when the embedding was not pruned."""
    stages = section.get("embedding_stages") or [section.get("embedding")]
    return ", ".join(f"{s.get('channels_before')} → {s.get('channels_after')}"
                     for s in stages if isinstance(s, dict))


def _draw_history(ax, history: list[dict]) -> None:
    steps = [row["step"] for row in history]
    lines = []
    for key, label, style in (("cost", "expected cost", "-"),
                              ("alive_cost_ratio", "alive cost ratio", "--")):
        points = [(row["step"], row[key]) for row in history if row.get(key) is not None]
        if points:
            xs, ys = zip(*points)
            lines += ax.plot(xs, ys, style, color="#2f6db5", label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("cost (fraction of seed)")
    ax.grid(alpha=0.3)
    loss_ax = ax.twinx()
    points = [(row["step"], row["task_loss"]) for row in history
              if row.get("task_loss") is not None]
    if points:
        xs, ys = zip(*points)
        lines += loss_ax.plot(xs, ys, "-", color="#d1603d", label="task loss")
    loss_ax.set_ylabel("task loss")
    ax.set_xlim(min(steps), max(max(steps), min(steps) + 1))
    ax.set_title("Structure learning")
    if lines:
        # Below the axes: inside, it would hide the curves of one axis or the other.
        ax.legend(lines, [line.get_label() for line in lines], loc="upper center",
                  bbox_to_anchor=(0.5, -0.14), ncol=len(lines), frameon=False)
