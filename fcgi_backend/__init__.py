"""fcgi_backend: a FastCGI application server for Python handlers and mustache views behind Apache 2.4."""

__version__ = "0.1.0"

from .config import ServerConfig  # noqa: E402
from .errors import HTTPError, NotFound  # noqa: E402
from .registry import Registry  # noqa: E402
from .request import Request  # noqa: E402
from .response import Response  # noqa: E402
from .appserver import AppServer  # noqa: E402
from .fastcgi_server import FastCGIServer, Server  # noqa: E402
from .http_server import HTTPServer  # noqa: E402
from .tls import TLSConfig  # noqa: E402
from .uploads import UploadedFile  # noqa: E402
from .waiter import Waiter  # noqa: E402

__all__ = ["AppServer", "FastCGIServer", "HTTPError", "HTTPServer", "NotFound", "Registry", "Request", "Response", "Server",
           "ServerConfig", "TLSConfig", "UploadedFile", "Waiter", "__version__"]
