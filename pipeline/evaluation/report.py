"""The evaluation report: metrics side by side, paired significance vs a baseline, plots.

Writes ``metrics.json``, ``report.md``, ``report.html`` (self-contained, with a per-query view) and
PNG plots (metric per run, metric vs number of candidates reranked, per-query delta histogram)
into one directory, atomically per file. Runs with the same content (the candidate source is also
one of the fusions) are one row in the report, named together; metrics.json keeps every run.
Figures are drawn on ``matplotlib.figure.Figure`` directly: no pyplot state and no backend
switch, so a notebook's matplotlib setup is left as it was.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from matplotlib.figure import Figure

from listcon.pipeline.evaluation.evaluate import aggregate, paired_test
from listcon.pipeline.evaluation.html_report import QueryDetails, render
from listcon.pipeline.store.atomic import write_text

DEPTH_RUN = re.compile(r"^(?P<base>.+)-top(?P<depth>\d+)$")
SIGNIFICANCE = 0.05


FIRST_STAGES = ("dense", "lexical", "hybrid-rrf", "hybrid-convex", "first_stage")


def run_order(runs: list[str]) -> list[str]:
    """First stages first (dense, lexical, the fusions, the candidate source), then every
    ``<base>-top<N>`` by depth with ``<base>`` (its full depth) after them, then the rest by name."""
    def key(run: str):
        if run in FIRST_STAGES:
            return (0, FIRST_STAGES.index(run), 0, run)
        match = DEPTH_RUN.match(run)
        if match:
            return (1, match["base"], int(match["depth"]), run)
        if any(DEPTH_RUN.match(r) and DEPTH_RUN.match(r)["base"] == run for r in runs):
            return (1, run, float("inf"), run)
        return (2, run, 0, run)
    return sorted(runs, key=key)


def run_digest(run: dict[str, dict[str, float]]) -> str:
    """SHA-256 of a run's (query, passage, score) triples, whatever their order in the file or its tag."""
    digest = hashlib.sha256()
    for query in sorted(run):
        for passage, score in sorted(run[query].items()):
            digest.update(f"{query}\t{passage}\t{score!r}\n".encode())
    return digest.hexdigest()


def same_runs(digests: dict[str, str], keep: str | None = "first_stage") -> dict[str, str]:
    """``{run: the run it repeats}`` for runs whose content an earlier one (in ``run_order``) has;
    ``keep`` (the baseline) stands for its group when it is in one."""
    groups: dict[str, list[str]] = {}
    for run in run_order(list(digests)):
        groups.setdefault(digests[run], []).append(run)
    out = {}
    for members in groups.values():
        head = keep if keep in members else members[0]
        out.update({run: head for run in members if run != head})
    return out


def confidence_interval(values: dict[str, float], level: float = 0.95) -> float:
    """Half-width of the ``level`` t-interval of the mean over queries (0 when undefined)."""
    from scipy.stats import t

    n = len(values)
    if n < 2:
        return 0.0
    data = list(values.values())
    mean = sum(data) / n
    sd = (sum((x - mean) ** 2 for x in data) / (n - 1)) ** 0.5
    return float(t.ppf(0.5 + level / 2, n - 1) * sd / n**0.5)


def summarize(per_run: dict[str, dict[str, dict[str, float]]], baseline: str | None) -> dict:
    """``{run: {measure: {mean, ci95, p_vs_baseline, delta}}}``, runs in their natural order."""
    out: dict = {}
    base = per_run.get(baseline) if baseline else None
    for run in run_order(list(per_run)):
        values = per_run[run]
        means = aggregate(values)
        out[run] = {}
        for measure, mean in means.items():
            entry = {"mean": mean, "ci95": confidence_interval(values[measure])}
            if base is not None and run != baseline:
                entry["delta"] = mean - aggregate({measure: base[measure]})[measure]
                entry["p_vs_baseline"] = paired_test(values[measure], base[measure])
            out[run][measure] = entry
    return out


def versus(per_run: dict, main_run: str | None, measure: str) -> dict:
    """The main run against every first stage: ``{first stage: {delta, p}}`` on ``measure``."""
    if not main_run or main_run not in per_run:
        return {}
    ours = per_run[main_run][measure]
    out = {}
    for run in FIRST_STAGES:
        if run in per_run:
            theirs = per_run[run][measure]
            out[run] = {"delta": aggregate({measure: ours})[measure] - aggregate({measure: theirs})[measure],
                        "p": paired_test(ours, theirs)}
    return out


def cell(entry: dict) -> tuple[str, str]:
    """A run's measure as ("mean ±ci", "(delta*, p=...)" against the baseline, or "" for the baseline)."""
    shown = f"{entry['mean']:.4f} ±{entry['ci95']:.3f}"
    if "p_vs_baseline" not in entry:
        return shown, ""
    star = "*" if entry["p_vs_baseline"] < SIGNIFICANCE else ""
    return shown, f"({entry['delta']:+.4f}{star}, p={entry['p_vs_baseline']:.3g})"


def markdown(title: str, summary: dict, measures: list[str], baseline: str | None, queries: int, plots: list[str],
             main_run: str | None = None, against: dict | None = None, notes: list[str] = ()) -> str:
    lines = [f"# {title}", "", f"{queries} judged queries (a query missing from a run counts as 0). "
             "Each mean carries the half-width of its 95% confidence interval over queries (t-interval)."]
    lines += list(notes)
    if baseline:
        lines.append(f"Paired t-test against `{baseline}`; `*` marks p < {SIGNIFICANCE}.")
    lines += ["", "| run | " + " | ".join(measures) + " |", "|---|" + "---:|" * len(measures)]
    for run, metrics in summary.items():
        lines.append(f"| {run} | " + " | ".join(" ".join(filter(None, cell(metrics[m]))) for m in measures) + " |")
    if against:
        lines += ["", f"`{main_run}` against each first stage ({measures[0]}, paired t-test):", "",
                  "| first stage | delta | p |", "|---|---:|---:|"]
        lines += [f"| {run} | {v['delta']:+.4f} | {v['p']:.3g} |" for run, v in against.items()]
    lines += [""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(lines) + "\n"


def plot_metric_per_run(path: Path, summary: dict, measure: str) -> None:
    runs = list(summary)
    fig = Figure(figsize=(max(5, 1.2 * len(runs)), 3.5))
    ax = fig.subplots()
    ax.bar(runs, [summary[r][measure]["mean"] for r in runs], color="#4c72b0")
    ax.set_ylabel(measure)
    ax.set_title(f"{measure} per run")
    ax.tick_params(axis="x", rotation=30)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_metric_vs_depth(path: Path, summary: dict, measure: str, baseline: str | None, full_depth: dict[str, int]) -> bool:
    """Runs named ``<base>-top<N>`` (and ``<base>`` at its full depth) as lines; False if none."""
    series: dict[str, dict[int, float]] = {}
    for run, metrics in summary.items():
        match = DEPTH_RUN.match(run)
        if match:
            series.setdefault(match["base"], {})[int(match["depth"])] = metrics[measure]["mean"]
    for base, depth in full_depth.items():
        if base in series and base in summary:
            series[base][depth] = summary[base][measure]["mean"]
    if not series:
        return False
    fig = Figure(figsize=(5.5, 3.5))
    ax = fig.subplots()
    for base, points in series.items():
        depths = sorted(points)
        ax.plot(depths, [points[d] for d in depths], marker="o", label=base)
    if baseline and baseline in summary:
        ax.axhline(summary[baseline][measure]["mean"], color="grey", linestyle="--", label=baseline)
    ax.set_xscale("log")
    ax.set_xlabel("candidates reranked per query")
    ax.set_ylabel(measure)
    ax.set_title(f"{measure} vs reranking depth")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def plot_delta_histogram(path: Path, per_run: dict, run: str, baseline: str, measure: str) -> None:
    values, base = per_run[run][measure], per_run[baseline][measure]
    deltas = [values[q] - base[q] for q in sorted(values.keys() & base.keys())]
    fig = Figure(figsize=(5.5, 3.5))
    ax = fig.subplots()
    ax.hist(deltas, bins=30, color="#55a868")
    ax.axvline(0, color="black", linewidth=0.8)
    better, worse = sum(d > 0 for d in deltas), sum(d < 0 for d in deltas)
    ax.set_title(f"{run} - {baseline}: {measure} per query ({better} better, {worse} worse)")
    ax.set_xlabel(f"delta {measure}")
    ax.set_ylabel("queries")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_report(directory: str | Path, title: str, per_run: dict, measures: list[str], baseline: str | None,
                 main_run: str | None, full_depth: dict[str, int], extra: dict | None = None,
                 notes: list[str] = (), same: dict[str, str] | None = None, details: QueryDetails | None = None) -> dict:
    """Write metrics.json, report.md, report.html (with ``details``) and the plots; returns the summary.
    ``same`` ({run: the run it repeats}) folds repeated runs into one row of the report."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    same = same or {}
    full = summarize(per_run, baseline)
    aliases: dict[str, list[str]] = {}
    for run, kept in same.items():
        aliases.setdefault(kept, []).append(run)
    labels = {run: f"{run} (= {', '.join(aliases[run])})" if run in aliases else run for run in full if run not in same}
    summary = {label: full[run] for run, label in labels.items()}
    queries = len(next(iter(next(iter(per_run.values())).values()))) if per_run else 0
    headline = measures[0]
    plots = [directory / "metric_per_run.png"]
    plot_metric_per_run(plots[0], summary, headline)
    if plot_metric_vs_depth(directory / "metric_vs_depth.png", full, headline, baseline, full_depth):
        plots.append(directory / "metric_vs_depth.png")
    if baseline and main_run and main_run in per_run and baseline in per_run:
        plots.append(directory / "delta_histogram.png")
        plot_delta_histogram(plots[-1], per_run, main_run, baseline, headline)
    against = versus({r: v for r, v in per_run.items() if r not in same}, main_run, headline)
    payload = {"title": title, "queries": queries, "baseline": baseline, "runs": full, "same_as": same,
               "main_vs_first_stages": against, **(extra or {})}
    write_text(directory / "metrics.json", json.dumps(payload, indent=2) + "\n")
    shown_baseline = labels.get(baseline, baseline)
    write_text(directory / "report.md", markdown(title, summary, measures, shown_baseline, queries,
                                                 [str(p) for p in plots], main_run, against, notes))
    if details is not None:
        per_label = {labels[r]: v for r, v in per_run.items() if r in labels}
        first = [labels[r] for r in FIRST_STAGES if r in labels]
        cells = {run: [cell(metrics[m]) for m in measures] for run, metrics in summary.items()}
        write_text(directory / "report.html", render(title, summary, cells, measures, shown_baseline,
                                                     labels.get(main_run), first, per_label, _relabel(details, labels),
                                                     plots, list(notes)))
    return full


def _relabel(details: QueryDetails, labels: dict[str, str]) -> QueryDetails:
    """``details`` with its runs under their report labels (repeated runs left out)."""
    return QueryDetails(details.queries, details.judged,
                        {labels[r]: v for r, v in details.runs.items() if r in labels}, details.texts)
