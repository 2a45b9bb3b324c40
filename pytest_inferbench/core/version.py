"""The installed package's version, for provenance and the report's footer."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pytest-inferbench")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
