"""Render ``report.md`` and a self-contained ``report.html`` from ``summary.json``.

The report is a pure function of the run directory's ``config.json`` and
``summary.json`` (plus the machine-dependent measurements in ``timing.json``, when a
recipe records any), so ``weightlab report RUN_DIR`` re-renders it at any time.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from weightlab.errors import RunFileError
from weightlab.runs.files import atomic_write_bytes, atomic_write_text, read_json
from weightlab.runs.schema import check_config, check_summary

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}.held{color:#116611;font-weight:bold}.did-not-hold{color:#aa1111;font-weight:bold}
.not-tested{color:#777;font-weight:bold}blockquote{color:#555;border-left:3px solid #ccc;margin-left:0;padding-left:1em}
img{max-width:100%}code{background:#f3f3f3;padding:1px 3px}
"""


def render_report(run_dir: Path) -> list[Path]:
    """Write ``report.md``, ``report.html`` and the figures; return their paths."""
    from weightlab.recipes.registry import get_recipe

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunFileError(
            f"run directory {run_dir} does not exist; pass the directory a 'weightlab run' printed"
        )
    config = check_config(read_json(run_dir / "config.json", "run config"), run_dir / "config.json")
    summary = check_summary(
        read_json(run_dir / "summary.json", "run summary"), run_dir / "summary.json"
    )
    recipe = get_recipe(config["recipe"])
    try:
        tables = recipe.tables(summary)
        figures = recipe.figures(summary)
    except (KeyError, TypeError, ValueError, StopIteration) as e:
        raise RunFileError(
            f"{run_dir / 'summary.json'} is incomplete or corrupt ({type(e).__name__}: {e}); re-run the recipe"
        ) from e
    tables = tables + _measured_tables(run_dir / "timing.json")
    written = []
    for fig in figures:
        atomic_write_bytes(run_dir / fig.filename, fig.png)
        written.append(run_dir / fig.filename)
    md = _markdown(recipe, config, summary, tables, figures)
    atomic_write_text(run_dir / "report.md", md)
    atomic_write_text(run_dir / "report.html", _html(recipe, config, summary, tables, figures))
    return [run_dir / "report.md", run_dir / "report.html", *written]


def _measured_tables(path: Path) -> list[tuple[str, list[str], list[list[str]]]]:
    """The recipe's machine-dependent tables from ``timing.json`` (none if it is absent),
    shape-checked; titled as measured on this machine."""
    if not path.exists():
        return []
    timing = read_json(path, "run timing")
    items = timing.get("measurements", []) if isinstance(timing, dict) else None

    def is_strs(v) -> bool:
        return isinstance(v, list) and all(isinstance(x, str) for x in v)

    ok = isinstance(items, list) and all(
        isinstance(t, dict)
        and isinstance(t.get("title"), str)
        and is_strs(t.get("header"))
        and isinstance(t.get("rows"), list)
        and all(is_strs(r) for r in t["rows"])
        for t in items
    )
    if not ok:
        raise RunFileError(
            f"{path} has malformed measurements; delete it and re-run the recipe to rewrite it"
        )
    return [
        (
            f"{t['title']} (measured on this machine; not part of summary.json)",
            t["header"],
            t["rows"],
        )
        for t in items
    ]


def name_list(names: list[str], limit: int | None = None) -> str:
    """``a, b, c`` or, past ``limit`` names, ``a, b and N more``."""
    if limit is None or len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f" and {len(names) - limit} more"


def diverged_line(summary: dict, limit: int | None = None) -> str:
    """``Diverged members: k of n`` (with their names, at most ``limit`` of them), from a
    summary."""
    names = summary.get("diverged_members") or []
    total = summary.get("members")
    of = f" of {total}" if total is not None else ""
    return f"Diverged members: {len(names)}{of}" + (
        f" ({name_list(names, limit)})" if names else ""
    )


def _markdown(recipe, config, summary, tables, figures) -> str:
    out = [f"# {recipe.name}: {recipe.paper}", "", recipe.claim, ""]
    nd = config.get("non_default") or {}
    out += [
        "## Config",
        "",
        "Non-default: " + (", ".join(f"`{k}={v}`" for k, v in nd.items()) or "none (all defaults)"),
        "",
    ]
    out += ["## Claims", "", diverged_line(summary), ""]
    for c in summary["claims"]:
        out += [
            f"- **({c['id']}) {c['verdict'].upper()}**: {c['statement']}.",
            f"  {c['detail']}.",
            f"  > {c['quote']}",
            "",
        ]
    if summary.get("accuracy"):
        out += [f"Accuracy is {summary['accuracy']}.", ""]
    for title, header, rows in tables:
        out += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        out.append("")
    for fig in figures:
        out += [f"## {fig.title}", "", f"![{fig.title}]({fig.filename})", ""]
    return "\n".join(out)


def _html(recipe, config, summary, tables, figures) -> str:
    e = html.escape
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{e(recipe.name)}</title><style>{_STYLE}</style></head><body>"
    ]
    parts.append(f"<h1>{e(recipe.name)}</h1><p>{e(recipe.paper)}</p><p>{e(recipe.claim)}</p>")
    nd = config.get("non_default") or {}
    parts.append(
        "<h2>Config</h2><p>Non-default: "
        + (e(", ".join(f"{k}={v}" for k, v in nd.items())) or "none (all defaults)")
        + "</p>"
    )
    parts.append(f"<h2>Claims</h2><p>{e(diverged_line(summary))}</p><ul>")
    for c in summary["claims"]:
        cls = c["verdict"].replace(" ", "-")
        parts.append(
            f"<li><span class='{cls}'>({e(c['id'])}) {e(c['verdict'].upper())}</span>: {e(c['statement'])}.<br>{e(c['detail'])}.<blockquote>{e(c['quote'])}</blockquote></li>"
        )
    parts.append("</ul>")
    if summary.get("accuracy"):
        parts.append(f"<p>Accuracy is {e(summary['accuracy'])}.</p>")
    for fig in figures:
        b64 = base64.b64encode(fig.png).decode()
        parts.append(
            f"<h2>{e(fig.title)}</h2><img alt='{e(fig.title)}' src='data:image/png;base64,{b64}'>"
        )
    for title, header, rows in tables:
        parts.append(
            f"<h2>{e(title)}</h2><table><tr>"
            + "".join(f"<th>{e(h)}</th>" for h in header)
            + "</tr>"
        )
        parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows]
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)
