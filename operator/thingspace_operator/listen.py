"""A server's port, listening from a command's first instants.

The kubelet probes a container as soon as it starts, and every refused probe is a Warning
Event. A socket bound and listening before the slow imports holds those probes in its
backlog until the server, started later on the same socket, answers them.
"""

import socket


def listen_early(host: str, port: int) -> socket.socket | None:
    """``host:port`` bound and listening, or None where it cannot be now (the server then
    binds it itself later and fails as it always did)."""
    if not port:
        return None
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        return None
    return sock
