"""The site's HTML pages: the index, one page per run, one page per sweep.

Plain static HTML with an inline stylesheet: no script, no external URL, so a page reads
the same with JavaScript off and from ``file://``. Every piece of text from a run's files
goes through :func:`html.escape`; links are relative (``runs/<name>.html``,
``sweeps/<id>.html``) and their names quoted.
"""

from __future__ import annotations

import html
import json
from typing import Any
from urllib.parse import quote

from weightlab.site.collect import RunInfo, SweepInfo, claim_metrics

VERDICT_CLASS = {
    "held": "held",
    "did not hold": "did-not-hold",
    "not tested": "not-tested",
    "no run": "no-run",
}
NO_RUN = "no run"
SMOKE_NOTE = "smoke runs: no verdicts"

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1150px;margin:1.5em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:.4em 0 1em}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f3f3f3}.num{text-align:right;font-variant-numeric:tabular-nums}
.held{color:#116611;font-weight:bold}.did-not-hold{color:#aa1111;font-weight:bold}
.not-tested{color:#777;font-weight:bold}.no-run{color:#999;font-style:italic}
.nd{background:#fff6d8}.smoke{background:#eef;padding:.4em .8em;border:1px solid #99c}
blockquote{color:#555;border-left:3px solid #ccc;margin:.3em 0;padding-left:1em}
.wide{overflow-x:auto}.wide td{white-space:nowrap}
img{max-width:100%}code{background:#f3f3f3;padding:1px 3px}.small{font-size:12px;color:#555}
"""


def esc(x: Any) -> str:
    """``x`` as escaped HTML text (quotes too)."""
    return html.escape(str(x), quote=True)


def fmt(v: Any) -> str:
    """A value as short text: floats to 4 significant digits, other values as JSON."""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, str):
        return v
    return json.dumps(v)


def link(href: str, text: str) -> str:
    return f'<a href="{esc(quote(href))}">{esc(text)}</a>'


def verdict_span(verdict: str) -> str:
    return f'<span class="{VERDICT_CLASS.get(verdict, "")}">{esc(verdict)}</span>'


def page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{_STYLE}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )


def table(header: list[str], rows: list[list[str]], raw: bool = False) -> str:
    """An HTML table; cells are escaped unless ``raw`` (then they are HTML already)."""
    cell = (lambda c: c) if raw else esc
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def metrics_text(metrics: dict[str, float]) -> str:
    return "; ".join(f"{k} = {fmt(v)}" for k, v in metrics.items())


def run_href(name: str, prefix: str = "runs/") -> str:
    return f"{prefix}{name}.html"


# -- index ------------------------------------------------------------------------------
def _run_line(run: RunInfo, smoke: bool) -> str:
    nd = ", ".join(f"{k}={fmt(v)}" for k, v in run.non_default.items()) or "default config"
    if run.done and not smoke:
        verdicts = ", ".join(f"{c['id']}: {c['verdict']}" for c in run.claims())
    else:
        verdicts = run.status if not run.done else "finished"
    return f"<li>{link(run_href(run.name), run.name)} ({esc(nd)}; {esc(verdicts)})</li>"


def recipe_section(cls: type, runs: list[RunInfo], main: RunInfo | None, smoke: bool) -> str:
    """A recipe on the index: its paper, claims with verdicts and deciding numbers from
    ``main`` (or "no run"), and its other runs."""
    out = [
        f'<section id="{esc(cls.name)}"><h3>[#{esc(cls.row)}] <code>{esc(cls.name)}</code></h3>',
        f"<p>{esc(cls.paper)}</p>",
    ]
    if smoke:
        out.append(f'<p class="smoke">{esc(SMOKE_NOTE)}</p>')
        if main is not None:
            out.append(f"<p>newest run: {link(run_href(main.name), main.name)}</p>")
    elif main is None:
        rows = [[esc(cls.claim), verdict_span(NO_RUN), "no finished default-config run"]]
        out.append(table(["claim", "verdict", "deciding numbers"], rows, raw=True))
    else:
        rows = []
        for c in main.claims():
            nums = metrics_text(claim_metrics(main.metrics, c["id"]))
            rows.append(
                [
                    f"<b>{esc(c['id'])}</b> {esc(c['statement'])}",
                    verdict_span(c["verdict"]),
                    esc(c["detail"]) + (f'<div class="small">{esc(nums)}</div>' if nums else ""),
                ]
            )
        out.append(
            f"<p>default-config run: {link(run_href(main.name), main.name)}</p>"
            + table(["claim", "verdict", "deciding numbers"], rows, raw=True)
        )
    others = [r for r in runs if r is not main]
    if others:
        items = "".join(_run_line(r, smoke) for r in others)
        label = "other runs" if main is not None else "runs"
        out.append(f"<details open><summary>{label} ({len(others)})</summary><ul>{items}</ul>")
        out.append("</details>")
    out.append("</section>")
    return "\n".join(out)


def index_html(
    families: dict[str, list[type]],
    runs_by_recipe: dict[str, list[RunInfo]],
    mains: dict[str, RunInfo | None],
    sweeps: list[SweepInfo],
    problems: list[str],
    machine: dict[str, str],
    counts: dict[str, int],
    smoke: bool,
) -> str:
    body = ["<h1>weightlab: did the papers' claims hold here?</h1>"]
    if smoke:
        body.append(f'<p class="smoke"><b>{esc(SMOKE_NOTE)}</b>: these runs used smoke sizes.</p>')
    else:
        body.append(
            "<p>"
            + ", ".join(f"{verdict_span(k)}: {counts.get(k, 0)}" for k in VERDICT_CLASS)
            + " (claims of each recipe's newest finished default-config run; "
            "a recipe without one counts once as no run)</p>"
        )
    body.append(
        '<p class="small">' + "; ".join(f"{esc(k)}: {esc(v)}" for k, v in machine.items()) + "</p>"
    )
    toc = " · ".join(
        f'<a href="#family-{esc(f)}">{esc(f)} ({len(cs)})</a>' for f, cs in families.items() if cs
    )
    body.append(f"<p>{toc}</p>")
    if sweeps:
        items = "".join(
            f"<li>{link(f'sweeps/{s.id}.html', s.id)}: {esc(s.spec.get('recipe', '?'))}, "
            f"{len(s.runs)} runs, grid {esc(', '.join(s.grid_keys) or '(none)')}</li>"
            for s in sweeps
        )
        body.append(f"<h2>Sweeps</h2><ul>{items}</ul>")
    for family, classes in families.items():
        if not classes:
            continue
        body.append(f'<h2 id="family-{esc(family)}">{esc(family)}</h2>')
        for cls in sorted(classes, key=lambda c: (c.row, c.name)):
            body.append(
                recipe_section(cls, runs_by_recipe.get(cls.name, []), mains.get(cls.name), smoke)
            )
    unknown = sorted(set(runs_by_recipe) - {c.name for cs in families.values() for c in cs})
    if unknown:
        items = "".join(_run_line(r, smoke) for name in unknown for r in runs_by_recipe[name])
        body.append(f"<h2>Runs of recipes not registered here</h2><ul>{items}</ul>")
    if problems:
        items = "".join(f"<li>{esc(p)}</li>" for p in problems)
        body.append(f"<h2>Files the site could not read</h2><ul>{items}</ul>")
    return page("weightlab verdicts", "\n".join(body))


# -- run page ---------------------------------------------------------------------------
def run_html(
    run: RunInfo,
    cls: type | None,
    tables: list[tuple[str, list[str], list[list[str]]]],
    tables_problem: str | None,
    figures: list[str],
    sweep_ids: set[str],
    run_names: set[str],
) -> str:
    """A run's page: recipe and paper, config (non-defaults marked), claims with quotes and
    numbers, the recipe's tables, figures (files next to the page), wall time,
    environment and batch group."""
    b = [f"<p>{link('../index.html', 'all recipes')}</p>", f"<h1>{esc(run.name)}</h1>"]
    if cls is not None:
        b.append(
            f"<p>recipe <code>{esc(cls.name)}</code> [#{esc(cls.row)}], family "
            f"{esc(cls.family)}: {esc(cls.paper)}</p>"
        )
    else:
        b.append(f"<p>recipe <code>{esc(run.recipe)}</code> (not registered here)</p>")
    b.append(f"<p>status: <b>{esc(run.status)}</b></p>")
    rows = []
    for k, v in run.config.items():
        mark = k in run.non_default
        cls_attr = ' class="nd"' if mark else ""
        rows.append(
            f"<tr{cls_attr}><td>{esc(k)}</td><td>{esc(fmt(v))}</td>"
            f"<td>{'non-default' if mark else ''}</td></tr>"
        )
    b.append(
        "<h2>Config</h2><table><tr><th>field</th><th>value</th><th></th></tr>"
        + "".join(rows)
        + "</table>"
    )
    b.append("<h2>Claims</h2>")
    if not run.done:
        b.append("<p>not finished: no summary.json</p>")
    for c in run.claims():
        nums = claim_metrics(run.metrics, c["id"])
        b.append(
            f"<h3>{esc(c['id'])}: {verdict_span(c['verdict'])}</h3>"
            f"<blockquote>{esc(c['quote'])}</blockquote>"
            f"<p>checked: {esc(c['statement'])}</p><p>{esc(c['detail'])}</p>"
        )
        if nums:
            b.append(table(["metric", "value"], [[k, fmt(v)] for k, v in nums.items()]))
    for title, header, trows in tables:
        b.append(f"<h2>{esc(title)}</h2>" + table(list(header), [list(r) for r in trows]))
    if tables_problem:
        b.append(f"<p>tables unavailable: {esc(tables_problem)}</p>")
    if figures:
        b.append("<h2>Plots</h2>")
        for f in figures:
            src = esc(quote(f"{run.name}/{f}"))
            b.append(f'<p><img src="{src}" alt="{esc(f)}"></p>')
    b.append(_timing(run.timing))
    b.append(_batch(run.batch, sweep_ids, run_names))
    return page(run.name, "\n".join(b))


def _timing(timing: dict | None) -> str:
    if timing is None:
        return "<h2>Wall time</h2><p>no timing.json</p>"
    out = ["<h2>Wall time</h2>"]
    wall = timing.get("wall_s")
    units = timing.get("computed_units")
    n = len(units) if isinstance(units, list) else "?"
    if isinstance(wall, int | float):
        out.append(f"<p>{wall:.2f} s (the last invocation, which computed {n} unit(s))</p>")
    env = [["host", str(timing.get("host", "?"))], ["threads", str(timing.get("threads", "?"))]]
    versions = timing.get("versions")
    if isinstance(versions, dict):
        env += [[str(k), str(v)] for k, v in versions.items()]
    out.append("<h2>Environment</h2>" + table(["", ""], env))
    for m in timing.get("measurements") or []:
        if isinstance(m, dict) and isinstance(m.get("rows"), list):
            out.append(
                f"<h3>{esc(m.get('title', ''))} (measured on this machine)</h3>"
                + table(
                    [str(h) for h in m.get("header", [])], [[str(c) for c in r] for r in m["rows"]]
                )
            )
    return "\n".join(out)


def _batch(batch: dict | None, sweep_ids: set[str], run_names: set[str]) -> str:
    if batch is None:
        return ""
    sweep = str(batch.get("sweep", "?"))
    s = link(f"../sweeps/{sweep}.html", sweep) if sweep in sweep_ids else esc(sweep)
    mates = []
    for name in batch.get("group_runs") or []:
        name = str(name)
        mates.append(link(run_href(name, ""), name) if name in run_names else esc(name))
    return (
        f"<h2>Batch group</h2><p>sweep {s}, group {esc(batch.get('group', '?'))}: "
        + (", ".join(mates) or "no runs")
        + "</p>"
    )


# -- sweep page -------------------------------------------------------------------------
def sweep_html(
    sweep: SweepInfo, runs: dict[str, RunInfo], metric: str | None, plot: str | None
) -> str:
    """A sweep's page: its spec, runs x (point, status, verdicts, metrics), and the plot of
    ``metric`` over the grid (``plot``: the PNG's file name next to the page)."""
    keys = sweep.grid_keys
    b = [f"<p>{link('../index.html', 'all recipes')}</p>", f"<h1>sweep {esc(sweep.id)}</h1>"]
    spec_rows = [[k, fmt(v)] for k, v in sweep.spec.items()]
    spec_rows.append(["grid key order (x, lines, panels, ...)", ", ".join(keys) or "(no grid)"])
    b.append(table(["spec", ""], spec_rows))
    members = [runs.get(e["run"]) for e in sweep.runs]
    claim_ids: list[str] = []
    metric_names: list[str] = []
    for r in members:
        if r is None:
            continue
        for c in r.claims():
            if c["id"] not in claim_ids:
                claim_ids.append(c["id"])
        for m in r.metrics:
            if m not in metric_names:
                metric_names.append(m)
    if plot is not None:
        b.append(f"<h2>{esc(metric)} over the grid</h2>")
        b.append(f'<p><img src="{esc(quote(plot))}" alt="{esc(metric)}"></p>')
    elif metric is not None:
        b.append(f"<p>no finished run of this sweep has the metric {esc(metric)}: no plot</p>")
    header = ["run", *keys, "group", "status", *claim_ids, *metric_names]
    rows = []
    for e, r in zip(sweep.runs, members, strict=True):
        point = e.get("point", {})
        name = link(run_href(e["run"], "../runs/"), e["run"]) if r is not None else esc(e["run"])
        verdicts = {c["id"]: c["verdict"] for c in r.claims()} if r else {}
        cells = [name, *(esc(fmt(point.get(k))) for k in keys), esc(e.get("group", ""))]
        cells.append(esc(r.status if r is not None else "missing"))
        cells += [verdict_span(verdicts[i]) if i in verdicts else "" for i in claim_ids]
        ms = r.metrics if r is not None else {}
        cells += [esc(fmt(ms[m])) if m in ms else "" for m in metric_names]
        rows.append(cells)
    b.append('<h2>Runs</h2><div class="wide">' + table(header, rows, raw=True) + "</div>")
    return page(f"sweep {sweep.id}", "\n".join(b))
