"""Tables a person can read anywhere: a wide terminal, a narrow one, a pipe or a log file.

Rich fits a table to the terminal by wrapping every column, which in 80 columns turns a
run history into one-to-four-letter fragments, and with output piped it assumes 80
columns and does the same to cron mail and CI logs. :func:`print_table` never cuts or
fragments a cell:

* not a terminal: the table takes its content's full width (one line per row);
* a terminal wide enough: the full table;
* a narrower terminal: optional columns are dropped, right to left, until it fits
  (a note says which), and when even the essential columns do not fit, each row is
  printed as a stacked block of ``column: value`` lines.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = ["print_table"]

ESSENTIAL = "*"
"""A column name ending in ``*`` is essential: it is never dropped for width."""


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in columns:
        table.add_column(col, no_wrap=True, overflow="ignore")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    return table


def _pick(
    columns: Sequence[str], rows: Sequence[Sequence[str]], keep: Sequence[int]
) -> tuple[list[str], list[list[str]]]:
    return [columns[i] for i in keep], [[row[i] for i in keep] for row in rows]


def _natural_width(console: Console, table: Table) -> int:
    # Measured without the console's width limit (measurements are clamped to it).
    return console.measure(table, options=console.options.update_width(1_000_000)).maximum


def print_table(
    console: Console, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]
) -> None:
    """Print ``rows`` under ``columns`` (names ending in ``*`` are essential) without
    wrapping or cropping any cell; see the module docstring for the layouts."""
    names = [c.removesuffix(ESSENTIAL) for c in columns]
    if not console.is_terminal:
        table = _table(title, names, rows)
        width = max(_natural_width(console, table), len(title))
        wide = Console(width=width, color_system=None, highlight=False)
        with wide.capture() as captured:
            wide.print(table)
        # Plain lines for logs and pipes: no padding to the table's width.
        console.file.write("".join(ln.rstrip() + "\n" for ln in captured.get().splitlines()))
        console.file.flush()
        return
    keep = list(range(len(columns)))
    optional = [i for i, c in enumerate(columns) if not c.endswith(ESSENTIAL)]
    while True:
        cols, cells = _pick(names, rows, keep)
        table = _table(title, cols, cells)
        if _natural_width(console, table) <= console.width:
            console.print(table, soft_wrap=False)
            dropped = [names[i] for i in range(len(names)) if i not in keep]
            if dropped:
                console.print(
                    f"(not shown for width: {', '.join(dropped)}; widen the terminal or pipe "
                    "the output to see every column)",
                    style="dim",
                    highlight=False,
                    soft_wrap=True,
                )
            return
        if not optional:
            break
        keep.remove(optional.pop())
    # Even the essential columns do not fit: one block per row, nothing cut.
    console.print(Text(title, style="italic"), soft_wrap=True)
    label = max(len(n) for n in names)
    for row in rows:
        console.print()
        for name, cell in zip(names, row, strict=True):
            console.print(f"{name:>{label}}: {cell}", soft_wrap=True, highlight=False)
