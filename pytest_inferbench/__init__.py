"""pytest-inferbench: benchmark deep-learning inference from a few lines of YAML."""

from .core.version import __version__

__all__ = ["__version__", "load_results", "render_report"]


def __getattr__(name):
    # Imported on first use: the pytest plugin loads this package in every session, and pandas
    # is needed only when results are analysed.
    if name == "load_results":
        from .analysis.frame import load_results  # lazy: pandas
        return load_results
    if name == "render_report":
        from .report.render import render_report  # lazy: pandas
        return render_report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
