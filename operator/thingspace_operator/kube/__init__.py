"""The Kubernetes side: Secrets, status conditions, writes to other resources."""

import logging

# The kubernetes client logs every response body at DEBUG, Secret data included (base64 is
# no protection). The operator's DEBUG level must never show credentials.
logging.getLogger("kubernetes.client.rest").setLevel(logging.INFO)
