"""The ThingSpace side: client, errors, credentials, service names. No Kubernetes here."""
