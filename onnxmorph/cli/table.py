"""Plain-text tables and human-readable counts for terminal output."""

from __future__ import annotations


def format_count(value: float) -> str:
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.2f}{suffix}"
    return f"{value:.0f}"


def unpriced_lines(ops: list[dict], what: str = "NOT PRICED in latency") -> list[str]:
    """One line per op the latency model could not price (never counted as free)."""
    return [f"{what}: {op['op_type']} '{op['node']}' ({op['reason']})" for op in ops]


def render_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)
