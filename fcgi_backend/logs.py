"""Log set-up: timestamped lines on stderr; ``--debug`` adds detail."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"


def configure(debug: bool = False, stream=None) -> None:
    """Send the server's logs to ``stream`` (stderr) with timestamps and the process id."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger("fcgi_backend")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    root.propagate = False
