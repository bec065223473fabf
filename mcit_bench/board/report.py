"""Leaderboard views: a rich table, Markdown, CSV, LaTeX (booktabs) and one self-contained HTML page."""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Callable
from importlib.resources import files

from mcit_bench.board.stats import Row, Stat, board_summary

# The columns every text format shows, in order: (heading, metric name).
METRIC_COLUMNS: list[tuple[str, str]] = [
    ("ACC", "final_acc"), ("MAA", "avg_incremental_acc"), ("BWT", "bwt"), ("Forgetting", "forgetting"),
    ("FWT", "fwt"), ("MFT", "mean_finetune_acc"),
]


def fmt_stat(value: Stat | None, digits: int = 1, plus_minus: str = " ± ") -> str:
    if value is None:
        return "–"
    if value.n == 1:
        return f"{value.mean:.{digits}f}"
    return f"{value.mean:.{digits}f}{plus_minus}{value.std:.{digits}f}"


def fmt_count(count: int) -> str:
    if count >= 1_000_000:
        return f"{count / 1e6:.2f}M"
    if count >= 1_000:
        return f"{count / 1e3:.1f}k"
    return str(count)


def fmt_tier(row: Row) -> str:
    """The weakest verification tier of the row's seeds ("–": a seed submitted before tiers were recorded)."""
    return row.tier or "–"


def below_verified(row: Row) -> bool:
    """Some seed's predictions were not set beside the stream's own test split at submission."""
    return row.tier not in ("reproduced", "verified")


BELOW_VERIFIED = ("some seeds were not checked against the stream's test split at submission (tier below "
                  "'verified', docs/RESULTS.md)")


def _cells(row: Row, stat_format: Callable[[Stat | None], str]) -> list[str]:
    return ([row.key.sequence + (f"[{row.key.subset}]" if row.key.subset else ""), row.key.model, row.key.method,
             row.key.protocol_label(), str(len(row.seeds))]
            + [stat_format(row.metrics[name]) for _, name in METRIC_COLUMNS]
            + [stat_format(row.task_selection), fmt_count(row.trainable_params), fmt_count(row.added_params),
               stat_format(row.wall_seconds), fmt_tier(row), row.environment or "–"])


HEADINGS = (["sequence", "model", "method", "protocol", "seeds"] + [heading for heading, _ in METRIC_COLUMNS]
            + ["task sel.", "trainable", "added", "wall s", "tier", "environment"])


# the terminal table leaves out the tier (a star marks rows below 'verified') and the environment
TERMINAL_HIDDEN = 2


def rich_table(rows: list[Row]):
    """The terminal view; sequence and model move to the title when every row shares them, to fit 80
    columns, and rows below the 'verified' tier are starred instead of taking a column."""
    from rich.markup import escape
    from rich.table import Table

    shared = bool(rows) and len({(cells[0], cells[1]) for cells in (_cells(row, fmt_stat) for row in rows)}) == 1
    title = "mcit-bench leaderboard (mean ± std over seeds)"
    if shared:
        first = _cells(rows[0], fmt_stat)
        title += f": {first[0]}, {first[1]}"
    skip = 2 if shared else 0
    caption = f"* {BELOW_VERIFIED}" if any(below_verified(row) for row in rows) else None
    table = Table(title=escape(title), caption=caption, title_justify="left", caption_justify="left", padding=(0, 1))
    for index, heading in enumerate(HEADINGS[skip:-TERMINAL_HIDDEN], start=skip):
        table.add_column(heading, justify="left" if index < 4 else "right")
    for row in rows:
        cells = _cells(row, fmt_stat)[:-TERMINAL_HIDDEN]
        cells[4] += "*" if below_verified(row) else ""
        table.add_row(*(escape(cell) for cell in cells[skip:]))  # "[ci]" is text, not markup
    return table


def _markdown_escape(text: str) -> str:
    """A table cell as text: no column break, line break, HTML, link or image gets through."""
    text = " ".join(text.split())
    for char in "\\`<>|[]":  # brackets: no [text](url) link nor ![](url) image
        text = text.replace(char, "\\" + char)
    return text


def markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADINGS) + " |",
             "|" + "|".join("---" if i < 4 else "---:" for i in range(len(HEADINGS))) + "|"]
    lines += ["| " + " | ".join(_markdown_escape(cell) for cell in _cells(row, fmt_stat)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _csv_text(text: str) -> str:
    """A text cell a spreadsheet shows as text: one that opens like a formula gets a leading quote (OWASP)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def to_csv(rows: list[Row]) -> str:
    """One line per key with mean, std and 95% CI as separate numeric columns (for spreadsheets)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    names = [name for _, name in METRIC_COLUMNS] + ["task_selection", "wall_seconds"]
    writer.writerow(["sequence", "subset", "model", "method", "protocol", "seeds"]
                    + [f"{name}_{part}" for name in names for part in ("mean", "std", "ci95")]
                    + ["trainable_params", "added_params", "tier", "environment"])
    for row in rows:
        stats = [row.metrics[name] for _, name in METRIC_COLUMNS] + [row.task_selection, row.wall_seconds]
        values = []
        for value in stats:
            values += ["", "", ""] if value is None else [f"{value.mean:.4f}", f"{value.std:.4f}", f"{value.ci95:.4f}"]
        texts = [row.key.sequence, row.key.subset or "", row.key.model, row.key.method, row.key.protocol_label()]
        writer.writerow([_csv_text(text) for text in texts] + [" ".join(map(str, row.seeds))] + values
                        + [row.trainable_params, row.added_params, row.tier or "", row.environment or ""])
    return buffer.getvalue()


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$",
                  "{": r"\{", "}": r"\}", "^": r"\textasciicircum{}", "~": r"\textasciitilde{}"}


def _latex_escape(text: str) -> str:
    """Plain text in LaTeX, in one pass (a backslash becomes \\textbackslash{} whose braces stay braces)."""
    return "".join(_LATEX_SPECIAL.get(char, char) for char in " ".join(text.split()))


def latex(rows: list[Row]) -> str:
    """A booktabs table: method, metrics as mean$\\pm$std, the best mean per column in bold."""
    names = [name for _, name in METRIC_COLUMNS]
    higher_better = {"forgetting": False}
    best: dict[str, float] = {}
    for name in names:
        means = [row.metrics[name].mean for row in rows if row.metrics[name] is not None]
        if means:
            best[name] = max(means) if higher_better.get(name, True) else min(means)

    def cell(row: Row, name: str) -> str:
        value = row.metrics[name]
        if value is None:
            return "--"
        text = f"{value.mean:.1f}" + (f"$\\pm${value.std:.1f}" if value.n > 1 else "")
        is_best = name in best and abs(value.mean - best[name]) < 1e-9
        return f"\\textbf{{{text}}}" if is_best else text

    lines = [r"\begin{tabular}{l" + "r" * len(names) + "}", r"\toprule",
             "Method & " + " & ".join(heading for heading, _ in METRIC_COLUMNS) + r" \\", r"\midrule"]
    for row in rows:
        marker = r"\textsuperscript{\textdagger}" if below_verified(row) else ""
        lines.append(_latex_escape(row.key.method) + marker + " & "
                     + " & ".join(cell(row, name) for name in names) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if any(below_verified(row) for row in rows):
        lines.append(r"% \textdagger: " + BELOW_VERIFIED)
    return "\n".join(lines) + "\n"


def html_page(rows: list[Row], title: str = "mcit-bench leaderboard") -> str:
    """One file, no network: the data is inlined as JSON and drawn by a small script (table, heatmaps, curves)."""
    # JSON inside <script>: no "<" at all, so neither "</script>" nor "<!--" can end or disable it
    data = (json.dumps(board_summary(rows), sort_keys=True)
            .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))
    page = files("mcit_bench.board").joinpath("leaderboard_page.html").read_text(encoding="utf-8")
    return page.replace("__TITLE__", html.escape(title)).replace("__DATA__", data)
