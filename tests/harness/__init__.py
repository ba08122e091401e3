"""Test and demo harness: an emulated Kubernetes API and the operator run in-process."""
