"""The Kubernetes side: Secrets, status conditions, writes to other resources."""

import logging

# The kubernetes client (the gitops commands read Secrets through it) logs every response
# body at DEBUG, Secret data included (base64 is no protection). DEBUG must never show
# credentials.
logging.getLogger("kubernetes.client.rest").setLevel(logging.INFO)
