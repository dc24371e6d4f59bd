"""Render a run's report (markdown + self-contained HTML with embedded plots)."""

from weightlab.report.render import render_report

__all__ = ["render_report"]
