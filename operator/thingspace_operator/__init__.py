"""Kubernetes operator for Verizon ThingSpace callback-listener registrations."""


def __getattr__(name: str) -> str:
    """``__version__``, pyproject.toml's (the one source), read when asked: importing the
    package stays free, since ``thingspace-operator`` must catch SIGTERM before it loads
    anything (importlib.metadata alone costs about 70 ms)."""
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("thingspace-operator")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"
