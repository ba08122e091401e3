"""Raw aiohttp access to the Kubernetes API, authenticated as the ``kubernetes`` client is.

The official client blocks a thread for every watch and cannot be interrupted; the few
requests that need streaming (the Secret watch) use aiohttp with the same server,
certificates and token the ``kubernetes`` client resolved (in-cluster or kubeconfig).
"""

import ssl
from typing import Any

import aiohttp
import kubernetes.client


class KubeConnection:
    """Base URL, TLS settings and current credentials of one API server."""

    def __init__(self, configuration: kubernetes.client.Configuration) -> None:
        self._configuration = configuration
        self.base_url = str(configuration.host).rstrip("/")
        self._ssl = self._ssl_context() if self.base_url.startswith("https") else None

    def _ssl_context(self) -> ssl.SSLContext:
        config = self._configuration
        context = ssl.create_default_context(cafile=config.ssl_ca_cert or None)
        if config.cert_file:
            context.load_cert_chain(config.cert_file, config.key_file)
        if not config.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def headers(self) -> dict[str, str]:
        """Authorization as the ``kubernetes`` client sends it now (in-cluster and exec
        credentials rotate; the client's own settings refresh them)."""
        headers = {"Accept": "application/json"}
        for setting in self._configuration.auth_settings().values():
            if setting.get("in") == "header" and setting.get("value"):
                headers[str(setting["key"])] = str(setting["value"])
        return headers

    def url(self, path: str) -> str:
        """The full URL of an API path (the server may itself sit under a path prefix)."""
        return self.base_url + path

    def session(self, **kwargs: Any) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else False)
        return aiohttp.ClientSession(connector=connector, **kwargs)
