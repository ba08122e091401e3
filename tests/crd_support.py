"""The ThingSpaceCallback CRD as tests see it, read from ``crds/`` (the file users apply).

Each call returns a fresh copy, so a test may edit what it gets.
"""

import copy
import functools
from pathlib import Path
from typing import Any

import yaml

CRD_PATH = Path(__file__).resolve().parents[1] / "crds" / "thingspacecallbacks.thingspace.io.yaml"


@functools.cache
def _parsed() -> dict[str, Any]:
    crd: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    return crd


def load_crd() -> dict[str, Any]:
    """The whole CustomResourceDefinition object."""
    return copy.deepcopy(_parsed())


def crd_schema(version: str | None = None) -> dict[str, Any]:
    """The ``openAPIV3Schema`` of ``version``, by default of the storage version."""
    for entry in load_crd()["spec"]["versions"]:
        if entry["name"] == version or (version is None and entry["storage"]):
            schema: dict[str, Any] = entry["schema"]["openAPIV3Schema"]
            return schema
    raise KeyError(f"the CRD has no version {version!r}")
