"""The HTML trade-off report (Jinja2 templates, plotly.js embedded), built from analysis/."""

from .render import ReportError, render_report

__all__ = ["ReportError", "render_report"]
