"""Kubernetes operator for Verizon ThingSpace callback-listener registrations."""

__version__ = "0.1.0"
