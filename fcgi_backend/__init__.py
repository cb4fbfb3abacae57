"""fcgi_backend: a FastCGI application server for Python handlers and mustache views behind Apache 2.4."""

__version__ = "0.1.0"

from .config import ServerConfig  # noqa: E402
from .errors import HTTPError, NotFound  # noqa: E402
from .registry import Registry  # noqa: E402
from .request import Request  # noqa: E402
from .response import Response  # noqa: E402
from .server import Server  # noqa: E402

__all__ = ["HTTPError", "NotFound", "Registry", "Request", "Response", "Server", "ServerConfig", "__version__"]
