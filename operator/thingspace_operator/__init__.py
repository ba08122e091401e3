"""Kubernetes operator for Verizon ThingSpace callback-listener registrations."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("thingspace-operator")  # pyproject.toml's, the one source
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
