"""pytest-inferbench: benchmark deep-learning inference from a few lines of YAML."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pytest-inferbench")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
