"""Command-line tools for GitOps: export live registrations, diff manifests, show status."""
