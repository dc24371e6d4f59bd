"""Text and JSON forms of ``weightlab runs list``, ``show`` and ``compare``.

Text is for people: aligned tables, times in UTC to the minute, numbers to 6 significant
digits. JSON is for programs: every stored field, times as ISO 8601 UTC strings
(``2026-11-26T18:30:12Z``), numbers as stored.
"""

from __future__ import annotations

import json
import time
from typing import Any

from weightlab.catalog.query import verdict_counts


def iso(t: float | None) -> str | None:
    return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _minute(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M", time.gmtime(t))


def wall(seconds: float | None) -> str:
    """``0.4 s``, ``59.9 s``, ``2 min 05 s``, ``1 h 02 min``."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    s = int(round(seconds))
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def value(v: Any) -> str:
    """A config or metric value: strings as they are, numbers to 6 significant digits."""
    if isinstance(v, str):
        return v
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, float):
        return format(v, ".6g")
    if isinstance(v, int):
        return str(v)
    return json.dumps(v)


def signed(v: float) -> str:
    return format(v, "+.6g")


def counts_text(run: dict) -> str:
    """``2 held, 1 not tested``; ``-`` for a run without claims."""
    return ", ".join(f"{n} {v}" for v, n in verdict_counts(run).items()) or "-"


def table(header: list[str], rows: list[list[str]], indent: str = "") -> list[str]:
    """Left-aligned columns separated by two spaces (no trailing spaces)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [
        (indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))).rstrip()
        for r in [header, *rows]
    ]


# -- list ------------------------------------------------------------------------------
def list_text(runs: list[dict], where: str) -> str:
    if not runs:
        return f"no runs in {where} match"
    rows = [
        [r["id"], r["recipe"] or "-", r["status"], counts_text(r), wall(r["wall_s"]),
         _minute(r["end"])]
        for r in runs
    ]  # fmt: skip
    lines = table(["run", "recipe", "status", "claims", "wall", "end (UTC)"], rows)
    lines.append(f"{len(runs)} run{'s' if len(runs) != 1 else ''}")
    return "\n".join(lines)


def list_json(runs: list[dict]) -> dict:
    return {
        "runs": [
            {
                "id": r["id"], "recipe": r["recipe"], "family": r["family"], "row": r["row"],
                "status": r["status"], "verdicts": verdict_counts(r), "wall_s": r["wall_s"],
                "start": iso(r["start"]), "end": iso(r["end"]), "sweep": r["sweep"],
                "batch_group": r["batch_group"], "error": r["error"],
            }
            for r in runs
        ]
    }  # fmt: skip


# -- show ------------------------------------------------------------------------------
def _recipe_line(run: dict) -> str:
    where = ", ".join(
        x for x in (run["family"], f"[#{run['row']}]" if run["row"] is not None else None) if x
    )
    return f"{run['recipe'] or '-'}" + (f" ({where})" if where else "")


def show_text(run: dict) -> str:
    v = run["versions"] or {}
    env = [
        f"host {run['host'] or '-'}", f"pid {run['pid'] if run['pid'] is not None else '-'}",
        f"device {run['device'] or '-'}",
        f"threads {run['threads'] if run['threads'] is not None else '-'}",
    ]  # fmt: skip
    head = [
        ["run", run["id"]],
        ["recipe", _recipe_line(run)],
        ["status", run["status"] + (f": {run['error']}" if run["error"] else "")],
        ["sweep", f"{run['sweep'] or '-'}, group {run['batch_group'] or '-'}"],
        ["start", _minute(run["start"])],
        ["end", _minute(run["end"])],
        ["wall", wall(run["wall_s"])],
        ["environment", ", ".join(env)],
        ["versions", ", ".join(f"{k} {v[k]}" for k in sorted(v)) or "-"],
    ]
    width = max(len(k) for k, _ in head)
    lines = [f"{k.ljust(width)}  {val}" for k, val in head]
    config, nd = run["config"] or {}, run["non_default"] or {}
    lines += ["", "config (* differs from the default)"]
    lines += table(
        ["", "field", "value"],
        [["*" if k in nd else "", k, value(config[k])] for k in config],
        indent="  ",
    )[1:]
    lines += ["", "claims"]
    if run["claims"]:
        for c in run["claims"]:
            lines.append(f"  {c['claim']}  {c['verdict']}: {c['statement']}")
            lines.append(f"      {c['detail']}")
    else:
        lines.append("  (none)")
    lines += ["", "metrics"]
    if run["metrics"]:
        lines += table(["name", "value"], [[k, value(x)] for k, x in run["metrics"].items()],
                       indent="  ")[1:]  # fmt: skip
    else:
        lines.append("  (none)")
    return "\n".join(lines)


def show_json(run: dict) -> dict:
    return {
        "id": run["id"], "recipe": run["recipe"], "family": run["family"], "row": run["row"],
        "status": run["status"], "error": run["error"], "sweep": run["sweep"],
        "batch_group": run["batch_group"], "start": iso(run["start"]), "end": iso(run["end"]),
        "wall_s": run["wall_s"],
        "environment": {
            "host": run["host"], "pid": run["pid"], "device": run["device"],
            "threads": run["threads"], "versions": run["versions"],
        },
        "config": run["config"], "non_default": sorted(run["non_default"] or {}),
        "claims": run["claims"], "metrics": run["metrics"],
    }  # fmt: skip


# -- compare ---------------------------------------------------------------------------
_MISSING = object()


def compare_data(a: dict, b: dict) -> dict:
    """The differences of runs ``a`` and ``b``: config fields, claim verdicts and metrics
    whose values differ (``diff`` = B − A where both are numbers), and how many agree."""
    ca, cb = a["config"] or {}, b["config"] or {}
    config = [
        {"field": k, "a": ca.get(k), "b": cb.get(k)}
        for k in sorted(set(ca) | set(cb))
        if ca.get(k, _MISSING) != cb.get(k, _MISSING)
    ]
    va = {c["claim"]: c["verdict"] for c in a["claims"]}
    vb = {c["claim"]: c["verdict"] for c in b["claims"]}
    claims_order = list(va) + [k for k in vb if k not in va]
    claims = [{"claim": k, "a": va.get(k), "b": vb.get(k)} for k in claims_order
              if va.get(k) != vb.get(k)]  # fmt: skip
    ma, mb = a["metrics"], b["metrics"]
    names = list(ma) + [k for k in mb if k not in ma]
    metrics = [
        {"name": k, "a": ma.get(k), "b": mb.get(k),
         "diff": mb[k] - ma[k] if k in ma and k in mb else None}
        for k in names
        if ma.get(k) != mb.get(k)
    ]  # fmt: skip
    return {
        "a": a["id"], "b": b["id"],
        "status": {"a": a["status"], "b": b["status"]},
        "recipe": {"a": a["recipe"], "b": b["recipe"]},
        "config": config, "config_equal": len(set(ca) | set(cb)) - len(config),
        "claims": claims, "claims_equal": len(claims_order) - len(claims),
        "metrics": metrics, "metrics_equal": len(names) - len(metrics),
    }  # fmt: skip


def compare_text(d: dict) -> str:
    def opt(x: Any) -> str:
        return "-" if x is None else value(x)

    lines = [f"A  {d['a']}  ({d['recipe']['a'] or '-'}, {d['status']['a']})",
             f"B  {d['b']}  ({d['recipe']['b'] or '-'}, {d['status']['b']})", ""]  # fmt: skip
    sections = (
        ("config", d["config"], d["config_equal"], "field",
         lambda r: [r["field"], opt(r["a"]), opt(r["b"])], ["A", "B"]),
        ("verdicts", d["claims"], d["claims_equal"], "claim",
         lambda r: [r["claim"], r["a"] or "-", r["b"] or "-"], ["A", "B"]),
        ("metrics", d["metrics"], d["metrics_equal"], "name",
         lambda r: [r["name"], opt(r["a"]), opt(r["b"]),
                    "-" if r["diff"] is None else signed(r["diff"])], ["A", "B", "B-A"]),
    )  # fmt: skip
    for title, rows, equal, key, cells, cols in sections:
        same = f"{equal} equal" if equal else "none equal"
        lines.append(f"{title}: {len(rows)} differ, {same}")
        if rows:
            lines += table([key, *cols], [cells(r) for r in rows], indent="  ")
        lines.append("")
    return "\n".join(lines).rstrip()
