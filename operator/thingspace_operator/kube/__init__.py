"""The Kubernetes side: Secrets and status conditions. No ThingSpace HTTP details here."""
