"""The ThingSpace side: client, errors, credentials and the simulator. No Kubernetes here."""
