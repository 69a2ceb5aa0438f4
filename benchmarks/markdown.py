"""Markdown table writing shared by every benchmark report (accuracy, latency, real slices, bench all)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def md_cell(text: object) -> str:
    """Escape pipes so a value like |dDice TS| stays inside its Markdown table cell."""
    return str(text).replace("|", "\\|")


def number(value: float | int | None, spec: str = ".4f") -> str:
    """`value` formatted with `spec`, or "-" when it was not measured."""
    return "-" if value is None else format(value, spec)


def table(header: Sequence[str], align: str, rows: Iterable[Sequence[object]]) -> list[str]:
    """Lines of a Markdown table; `align` has one letter per column: l (left) or r (right).

    Cells are written as given (callers escape with md_cell where a value may hold a pipe).
    Raises ValueError when `align` or a row does not have one entry per column.
    """
    if len(align) != len(header) or set(align) - {"l", "r"}:
        raise ValueError(f"align {align!r} needs one of l/r per column ({len(header)} columns)")
    lines = ["| " + " | ".join(header) + " |", "|" + "".join("---|" if a == "l" else "---:|" for a in align)]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"row {list(row)!r} has {len(row)} cells for {len(header)} columns")
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return lines
