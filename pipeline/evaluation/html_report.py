"""``report.html``: the evaluation report as one self-contained page (no network needed to open it).

The runs table with 95% confidence intervals, the plots (inlined), and a per-query view: every
query's headline measure for the main run and for the best first stage, sortable by their
difference; a click shows the query, its judged passages and each run's top 5 with scores, judged
ones marked. Over ``MAX_QUERIES`` queries the view keeps the largest wins and losses (it says so).
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MAX_QUERIES = 500  # per-query view: beyond this many, the largest wins and losses, half each
TOP = 5  # passages shown per run and query
SNIPPET = 300  # characters of a passage's text shown


@dataclass(frozen=True)
class QueryDetails:
    """What the per-query view shows: texts, judgments and each run's ranked passages."""

    queries: dict[str, str]  # qid -> text
    judged: dict[str, dict[str, int]]  # qid -> {passage id: grade}
    runs: dict[str, dict[str, dict[str, float]]]  # run -> qid -> {passage id: score}
    texts: Callable[[set[str]], dict[str, str]]  # passage ids -> their texts (asked for those the page shows)


def top_passages(run: dict[str, float], k: int = TOP) -> list[tuple[str, float]]:
    """A query's best ``k`` passages of a run, by score then id (as trec_eval orders ties)."""
    return sorted(run.items(), key=lambda item: (-item[1], item[0]))[:k]


def _per_query_rows(per_run: dict, main_run: str, best_first: str, measure: str) -> tuple[list[dict], str]:
    ours, theirs = per_run[main_run][measure], per_run[best_first][measure]
    rows = [{"qid": q, "main": ours[q], "first": theirs.get(q, 0.0), "delta": ours[q] - theirs.get(q, 0.0)}
            for q in ours]
    note = ""
    if len(rows) > MAX_QUERIES:
        rows.sort(key=lambda r: r["delta"])
        half = MAX_QUERIES // 2
        rows = rows[:half] + rows[-half:]
        note = f"The {half} largest losses and {half} largest wins of {len(ours)} queries are listed."
    return rows, note


def render(title: str, summary: dict, cells: dict[str, list[tuple[str, str]]], measures: list[str],
           baseline: str | None, main_run: str | None, first_stages: list[str], per_run: dict, details: QueryDetails,
           plots: list[Path], notes: list[str]) -> str:
    """The page's HTML; ``cells`` holds each run's measures as the report writes them (value, difference)."""
    headline = measures[0]
    present = [r for r in first_stages if r in summary]
    best_first = max(present, key=lambda r: summary[r][headline]["mean"]) if present else None
    table = ["<table class='runs'><thead><tr><th>run</th>"
             + "".join(f"<th>{html.escape(m)}</th>" for m in measures) + "</tr></thead><tbody>"]
    for run in summary:
        row = "".join(f"<td>{html.escape(shown)} <span class='d'>{html.escape(diff)}</span></td>" for shown, diff in cells[run])
        mark = " class='main'" if run == main_run else ""
        table.append(f"<tr{mark}><td>{html.escape(run)}</td>{row}</tr>")
    table.append("</tbody></table>")
    images = "".join(f"<figure><img alt='{html.escape(p.stem)}' src='data:image/png;base64,"
                     f"{base64.b64encode(p.read_bytes()).decode()}'><figcaption>{html.escape(p.stem)}</figcaption></figure>"
                     for p in plots if p.is_file())
    view, data = "", {}
    if main_run and best_first and main_run in per_run:
        rows, limited = _per_query_rows(per_run, main_run, best_first, headline)
        runs = [r for r in summary if r in details.runs]
        shown = {r["qid"] for r in rows}
        judged = {q: details.judged.get(q, {}) for q in shown}
        top = {run: {q: top_passages(details.runs[run].get(q, {})) for q in shown} for run in runs}
        ids = {p for grades in judged.values() for p in grades} | {p for lists in top.values() for ranked in lists.values()
                                                                   for p, _ in ranked}
        data = {"measure": headline, "main": main_run, "first": best_first, "runs": runs, "rows": rows,
                "queries": {q: details.queries.get(q, "") for q in shown}, "judged": judged, "top": top,
                "texts": {p: text[:SNIPPET] for p, text in details.texts(ids).items()}}
        view = (f"<h2>Per query: {html.escape(main_run)} against {html.escape(best_first)} (the best first stage)</h2>"
                f"<p>{html.escape(headline)} per query; click a column to sort, a row to see the query, its judged "
                f"passages and each run's top {TOP} (judged passages marked with their grade). {limited}</p>"
                "<div class='split'><div class='list'><table id='queries'><thead><tr><th data-k='qid'>query</th>"
                f"<th data-k='main'>{html.escape(main_run)}</th><th data-k='first'>{html.escape(best_first)}</th>"
                "<th data-k='delta'>Δ</th></tr></thead><tbody></tbody></table></div><div id='detail' class='detail'>"
                "<p>Pick a query.</p></div></div>")
    payload = json.dumps(data).replace("</", "<\\/")
    return PAGE.format(title=html.escape(title), notes="".join(f"<p>{html.escape(n)}</p>" for n in notes),
                       baseline=f"<p>Paired t-test against <code>{html.escape(baseline)}</code>.</p>" if baseline else "",
                       table="".join(table), images=images, view=view, data=payload)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; padding: 0 1em; }}
table {{ border-collapse: collapse; }} th, td {{ padding: 3px 8px; border-bottom: 1px solid #ddd; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }} tr.main {{ font-weight: 600; background: #f3f7ff; }}
.d {{ color: #666; font-size: 90%; }} figure {{ display: inline-block; margin: 0.5em; }} img {{ max-width: 560px; }}
.split {{ display: flex; gap: 1.5em; align-items: flex-start; }} .list {{ max-height: 70vh; overflow-y: auto; }}
#queries th {{ cursor: pointer; position: sticky; top: 0; background: #fff; }} #queries tbody tr {{ cursor: pointer; }}
#queries tr.on {{ background: #fff3c4; }} .win {{ color: #1a7f37; }} .loss {{ color: #c62828; }}
.detail {{ flex: 1; min-width: 0; }} .detail ol {{ padding-left: 1.4em; }} .detail li {{ margin-bottom: 0.4em; }}
.g {{ display: inline-block; min-width: 1.4em; text-align: center; background: #1a7f37; color: #fff; border-radius: 3px; }}
.t {{ color: #555; font-size: 92%; }} .runs-top {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); gap: 0.8em; }}
</style></head><body>
<h1>{title}</h1>{notes}{baseline}{table}<div>{images}</div>{view}
<script type="application/json" id="data">{data}</script>
<script>
const D = JSON.parse(document.getElementById("data").textContent);
const esc = s => String(s).replace(/[&<>"']/g, c => ({{"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}})[c]);
if (D.rows) {{
  const body = document.querySelector("#queries tbody");
  let key = "delta", desc = false;
  const draw = () => {{
    const rows = [...D.rows].sort((a, b) => (a[key] < b[key] ? -1 : a[key] > b[key] ? 1 : 0) * (desc ? -1 : 1));
    body.innerHTML = rows.map(r => `<tr data-q="${{esc(r.qid)}}"><td>${{esc(r.qid)}}</td><td>${{r.main.toFixed(3)}}</td>` +
      `<td>${{r.first.toFixed(3)}}</td><td class="${{r.delta > 0 ? "win" : r.delta < 0 ? "loss" : ""}}">${{r.delta.toFixed(3)}}</td></tr>`).join("");
  }};
  document.querySelectorAll("#queries th").forEach(th => th.onclick = () => {{
    desc = key === th.dataset.k ? !desc : false; key = th.dataset.k; draw();
  }});
  body.onclick = e => {{
    const tr = e.target.closest("tr"); if (!tr) return;
    body.querySelectorAll("tr.on").forEach(x => x.classList.remove("on")); tr.classList.add("on");
    show(tr.dataset.q);
  }};
  const show = q => {{
    const judged = D.judged[q] || {{}};
    const grade = p => judged[p] > 0 ? `<span class="g">${{judged[p]}}</span> ` : "";
    const item = (p, s) => `<li>${{grade(p)}}<b>${{esc(p)}}</b>${{s === null ? "" : " " + s.toFixed(4)}}<br><span class="t">${{esc(D.texts[p] || "")}}</span></li>`;
    const rel = Object.keys(judged).filter(p => judged[p] > 0);
    document.getElementById("detail").innerHTML = `<h3>${{esc(q)}}: ${{esc(D.queries[q])}}</h3>` +
      `<h4>Judged relevant (${{rel.length}})</h4><ol>${{rel.map(p => item(p, null)).join("")}}</ol>` +
      `<div class="runs-top">${{D.runs.map(run => `<div><h4>${{esc(run)}}</h4><ol>${{(D.top[run][q] || []).map(([p, s]) => item(p, s)).join("")}}</ol></div>`).join("")}}</div>`;
  }};
  draw();
  if (D.rows.length) show([...D.rows].sort((a, b) => a.delta - b.delta)[0].qid);
}}
</script></body></html>
"""
