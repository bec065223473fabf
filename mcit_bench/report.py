"""Leaderboard views: a rich table, Markdown, CSV, LaTeX (booktabs) and one self-contained HTML page."""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Callable

from mcit_bench.leaderboard import Row, Stat, board_summary

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


def _cells(row: Row, stat_format: Callable[[Stat | None], str]) -> list[str]:
    return ([row.key.sequence + (f"[{row.key.subset}]" if row.key.subset else ""), row.key.model, row.key.method,
             row.key.protocol, str(len(row.seeds))]
            + [stat_format(row.metrics[name]) for _, name in METRIC_COLUMNS]
            + [stat_format(row.task_selection), fmt_count(row.trainable_params), fmt_count(row.added_params),
               stat_format(row.wall_seconds)])


HEADINGS = (["sequence", "model", "method", "protocol", "seeds"] + [heading for heading, _ in METRIC_COLUMNS]
            + ["task sel.", "trainable", "added", "wall s"])


def rich_table(rows: list[Row]):
    """The terminal view; sequence and model move to the title when every row shares them, to fit 80 columns."""
    from rich.markup import escape
    from rich.table import Table

    shared = bool(rows) and len({(cells[0], cells[1]) for cells in (_cells(row, fmt_stat) for row in rows)}) == 1
    title = "mcit-bench leaderboard (mean ± std over seeds)"
    if shared:
        first = _cells(rows[0], fmt_stat)
        title += f": {first[0]}, {first[1]}"
    skip = 2 if shared else 0
    table = Table(title=escape(title), title_justify="left", padding=(0, 1))
    for index, heading in enumerate(HEADINGS[skip:], start=skip):
        table.add_column(heading, justify="left" if index < 4 else "right")
    for row in rows:
        table.add_row(*(escape(cell) for cell in _cells(row, fmt_stat)[skip:]))  # "[ci]" is text, not markup
    return table


def markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADINGS) + " |",
             "|" + "|".join("---" if i < 4 else "---:" for i in range(len(HEADINGS))) + "|"]
    lines += ["| " + " | ".join(_cells(row, fmt_stat)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[Row]) -> str:
    """One line per key with mean, std and 95% CI as separate numeric columns (for spreadsheets)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    names = [name for _, name in METRIC_COLUMNS] + ["task_selection", "wall_seconds"]
    writer.writerow(["sequence", "subset", "model", "method", "protocol", "seeds"]
                    + [f"{name}_{part}" for name in names for part in ("mean", "std", "ci95")]
                    + ["trainable_params", "added_params"])
    for row in rows:
        stats = [row.metrics[name] for _, name in METRIC_COLUMNS] + [row.task_selection, row.wall_seconds]
        values = []
        for value in stats:
            values += ["", "", ""] if value is None else [f"{value.mean:.4f}", f"{value.std:.4f}", f"{value.ci95:.4f}"]
        writer.writerow([row.key.sequence, row.key.subset or "", row.key.model, row.key.method, row.key.protocol,
                         " ".join(map(str, row.seeds))] + values + [row.trainable_params, row.added_params])
    return buffer.getvalue()


def _latex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                          ("$", r"\$"), ("{", r"\{"), ("}", r"\}")):
        text = text.replace(char, escaped)
    return text


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
        lines.append(_latex_escape(row.key.method) + " & " + " & ".join(cell(row, name) for name in names) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def html_page(rows: list[Row], title: str = "mcit-bench leaderboard") -> str:
    """One file, no network: the data is inlined as JSON and drawn by a small script (table, heatmaps, curves)."""
    data = json.dumps(board_summary(rows), sort_keys=True).replace("</", "<\\/")
    return _PAGE.replace("__TITLE__", html.escape(title)).replace("__DATA__", data)


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
:root { --ink:#1d2330; --muted:#6b7280; --line:#e5e7eb; --accent:#2563eb; --bg:#f8fafc; }
* { box-sizing:border-box; }
body { font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; color:var(--ink); background:var(--bg);
       margin:0; padding:28px 36px; }
h1 { font-size:22px; margin:0 0 4px; }
p.sub { color:var(--muted); margin:0 0 18px; }
.filters { display:flex; gap:16px; margin-bottom:14px; align-items:center; }
select { font:inherit; padding:4px 8px; border:1px solid var(--line); border-radius:6px; background:white; }
table { border-collapse:collapse; background:white; border:1px solid var(--line); border-radius:8px;
        overflow:hidden; width:100%; }
th, td { padding:7px 10px; border-bottom:1px solid var(--line); white-space:nowrap; }
th { background:#f1f5f9; text-align:left; cursor:pointer; user-select:none; font-weight:600; }
th.num, td.num { text-align:right; font-variant-numeric:tabular-nums; }
th[aria-sort=ascending]::after { content:" \\25B2"; color:var(--accent); }
th[aria-sort=descending]::after { content:" \\25BC"; color:var(--accent); }
tbody tr:hover { background:#f8fafc; }
tr.entry { cursor:pointer; }
td .pm { color:var(--muted); font-size:12px; }
tr.detail td { background:#fbfdff; padding:12px 16px; }
.charts { display:flex; gap:28px; flex-wrap:wrap; align-items:flex-start; }
.charts h3 { font-size:13px; margin:0 0 6px; color:var(--muted); font-weight:600; white-space:nowrap; }
.tag { display:inline-block; padding:1px 7px; border-radius:10px; font-size:12px; background:#eef2ff; color:#3730a3; }
.tag.upper-bound { background:#ecfdf5; color:#065f46; }
.tag.task-aware { background:#fff7ed; color:#9a3412; }
</style></head><body>
<h1>__TITLE__</h1>
<p class="sub">Mean ± std over seeds. ACC: final average accuracy; MAA: mean average accuracy over stages;
BWT: backward transfer; FWT: forward transfer; MFT: accuracy right after training each task.
Click a header to sort, a row to see its accuracy matrix and stage curve.</p>
<div class="filters">
 <label>Sequence <select id="f-sequence"></select></label>
 <label>Model <select id="f-model"></select></label>
</div>
<table id="board"><thead><tr></tr></thead><tbody></tbody></table>
<script id="data" type="application/json">__DATA__</script>
<script>
const DATA = JSON.parse(document.getElementById("data").textContent).rows;
const COLS = [
  {key:"method", label:"Method", text:r=>r.method},
  {key:"protocol", label:"Protocol", text:r=>r.protocol, html:r=>`<span class="tag ${r.protocol}">${r.protocol}</span>`},
  {key:"sequence", label:"Sequence", text:r=>r.sequence + (r.subset ? `[${r.subset}]` : "")},
  {key:"model", label:"Model", text:r=>r.model},
  {key:"seeds", label:"Seeds", num:true, value:r=>r.seeds.length},
  {key:"final_acc", label:"ACC", num:true, stat:r=>r.metrics.final_acc},
  {key:"avg_incremental_acc", label:"MAA", num:true, stat:r=>r.metrics.avg_incremental_acc},
  {key:"bwt", label:"BWT", num:true, stat:r=>r.metrics.bwt},
  {key:"forgetting", label:"Forgetting", num:true, stat:r=>r.metrics.forgetting},
  {key:"fwt", label:"FWT", num:true, stat:r=>r.metrics.fwt},
  {key:"task_selection", label:"Task sel.", num:true, stat:r=>r.task_selection},
  {key:"trainable_params", label:"Trainable", num:true, value:r=>r.trainable_params, fmt:count},
  {key:"added_params", label:"Added", num:true, value:r=>r.added_params, fmt:count},
  {key:"wall_seconds", label:"Wall s", num:true, stat:r=>r.wall_seconds, digits:0},
];
function count(n) { return n >= 1e6 ? (n/1e6).toFixed(2)+"M" : n >= 1e3 ? (n/1e3).toFixed(1)+"k" : String(n); }
function sortValue(c, r) { if (c.stat) { const s = c.stat(r); return s ? s.mean : -Infinity; }
  return c.value ? c.value(r) : c.text(r); }
function cellHtml(c, r) {
  if (c.stat) { const s = c.stat(r); if (!s) return "–"; const d = c.digits ?? 1;
    return s.n > 1 ? `${s.mean.toFixed(d)} <span class="pm">± ${s.std.toFixed(d)}</span>` : s.mean.toFixed(d); }
  if (c.value) { const v = c.value(r); return c.fmt ? c.fmt(v) : String(v); }
  return c.html ? c.html(r) : escapeHtml(c.text(r));
}
function escapeHtml(s) { return s.replace(/[&<>"]/g, ch => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[ch])); }
let sortCol = "final_acc", sortDir = -1;
const head = document.querySelector("#board thead tr");
COLS.forEach(c => { const th = document.createElement("th"); th.textContent = c.label; th.dataset.key = c.key;
  if (c.num) th.className = "num";
  th.addEventListener("click", () => { sortDir = sortCol === c.key ? -sortDir : (c.num ? -1 : 1); sortCol = c.key; render(); });
  head.appendChild(th); });
function fillFilter(id, values) { const sel = document.getElementById(id);
  sel.innerHTML = `<option value="">all</option>` + [...new Set(values)].sort().map(v => `<option>${escapeHtml(v)}</option>`).join("");
  sel.addEventListener("change", render); }
fillFilter("f-sequence", DATA.map(r => r.sequence)); fillFilter("f-model", DATA.map(r => r.model));
function heatColor(v) { const t = Math.max(0, Math.min(1, v / 100));
  const a = [239, 246, 255], b = [30, 64, 175];
  return `rgb(${a.map((x, i) => Math.round(x + (b[i] - x) * t)).join(",")})`; }
function heatmap(r) {
  const n = r.tasks.length, cell = 34, left = 90, top = 74, w = left + n * cell + 48, h = top + (n + 1) * cell + 4;
  let s = `<svg class="heatmap" width="${w}" height="${h}" role="img" aria-label="accuracy matrix">`;
  r.tasks.forEach((t, j) => { s += `<text x="${left + j * cell + cell / 2}" y="${top - 6}" font-size="11" transform="rotate(-45 ${left + j * cell + cell / 2} ${top - 6})">${escapeHtml(t)}</text>`; });
  r.matrix.forEach((row, i) => {
    s += `<text x="${left - 6}" y="${top + i * cell + cell / 2 + 4}" font-size="11" text-anchor="end">${i === 0 ? "base" : i + " " + escapeHtml(r.tasks[i - 1])}</text>`;
    row.forEach((v, j) => { const dark = v > 55;
      s += `<rect x="${left + j * cell}" y="${top + i * cell}" width="${cell - 1}" height="${cell - 1}" fill="${heatColor(v)}"><title>after ${i === 0 ? "base" : r.tasks[i - 1]}, ${r.tasks[j]}: ${v.toFixed(1)}</title></rect>`;
      s += `<text x="${left + j * cell + cell / 2}" y="${top + i * cell + cell / 2 + 4}" font-size="10" text-anchor="middle" fill="${dark ? "white" : "#1d2330"}">${Math.round(v)}</text>`; });
  });
  return s + "</svg>";
}
function curve(r) {
  const w = 380, h = 220, l = 36, b = 40, t = 10, n = r.stage_curve.length;
  const x = i => l + (n === 1 ? 0 : i * (w - l - 10) / (n - 1)), y = v => t + (h - t - b) * (1 - v / 100);
  let s = `<svg class="curve" width="${w}" height="${h}" role="img" aria-label="average accuracy after each stage">`;
  [0, 25, 50, 75, 100].forEach(v => { s += `<line x1="${l}" x2="${w - 10}" y1="${y(v)}" y2="${y(v)}" stroke="#e5e7eb"/><text x="${l - 6}" y="${y(v) + 4}" font-size="10" text-anchor="end">${v}</text>`; });
  s += `<polyline fill="none" stroke="#2563eb" stroke-width="2" points="${r.stage_curve.map((v, i) => x(i) + "," + y(v)).join(" ")}"/>`;
  r.stage_curve.forEach((v, i) => { s += `<circle cx="${x(i)}" cy="${y(v)}" r="3" fill="#2563eb"><title>after stage ${i + 1}: ${v.toFixed(1)}</title></circle><text x="${x(i)}" y="${h - 10}" font-size="10" text-anchor="middle">${i + 1}</text>`; });
  s += `<text x="${(l + w - 10) / 2}" y="${h - 2}" font-size="11" text-anchor="middle" fill="#6b7280">after training stage</text>`;
  return s + "</svg>";
}
let open = new Set();
function render() {
  const seq = document.getElementById("f-sequence").value, model = document.getElementById("f-model").value;
  const col = COLS.find(c => c.key === sortCol);
  const rows = DATA.filter(r => (!seq || r.sequence === seq) && (!model || r.model === model));
  rows.sort((a, b) => { const va = sortValue(col, a), vb = sortValue(col, b);
    return (va < vb ? -1 : va > vb ? 1 : 0) * sortDir; });
  head.querySelectorAll("th").forEach(th => th.setAttribute("aria-sort", th.dataset.key === sortCol ? (sortDir > 0 ? "ascending" : "descending") : "none"));
  const body = document.querySelector("#board tbody"); body.innerHTML = "";
  rows.forEach(r => { const id = [r.sequence, r.subset, r.model, r.method, r.protocol].join("|");
    const tr = document.createElement("tr"); tr.className = "entry";
    tr.innerHTML = COLS.map(c => `<td class="${c.num ? "num" : ""}">${cellHtml(c, r)}</td>`).join("");
    tr.addEventListener("click", () => { open.has(id) ? open.delete(id) : open.add(id); render(); });
    body.appendChild(tr);
    if (open.has(id)) { const d = document.createElement("tr"); d.className = "detail";
      d.innerHTML = `<td colspan="${COLS.length}"><div class="charts"><div><h3>Accuracy matrix (mean over seeds; rows: after stage)</h3>${heatmap(r)}</div><div><h3>Average accuracy on tasks seen so far</h3>${curve(r)}</div></div></td>`;
      body.appendChild(d); } });
}
if (DATA.length) open.add([DATA[0].sequence, DATA[0].subset, DATA[0].model, DATA[0].method, DATA[0].protocol].join("|"));
render();
</script></body></html>
"""
