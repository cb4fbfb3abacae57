"""A test client for a site's handlers: requests answered in-process by the same Application the
server runs, with the site's handler modules, templates and sessions, and cookies kept between
requests as a browser keeps them.

    client = SiteClient("/var/www/example")
    page = client.get("/?name=Ada")
    assert page.status == 200 and "Welcome, Ada" in page.text
"""

from __future__ import annotations

import io
import json as jsonlib
import secrets
import sys
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

from .app import site_application
from .limits import Limits
from .request import parse_cookie_header
from .sessions import SessionConfig, SessionManager, store_for
from .site import SiteLayout


@dataclass
class TestResponse:
    """What the application answered."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    cookies: dict[str, str] = field(default_factory=dict)  # set by this response

    __test__ = False  # (not a test class, whatever pytest thinks of the name)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self):
        return jsonlib.loads(self.body)

    def header(self, name: str) -> str | None:
        """The first header of this name, any case."""
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


def multipart_body(fields: dict, files: dict) -> tuple[bytes, str]:
    """A multipart/form-data body as browsers encode it (WHATWG: quotes, CR and LF in names
    percent-encoded, backslashes as they are); its Content-Type."""
    boundary = "----fcgi-backend-" + secrets.token_hex(12)

    def quoted(text: str) -> str:
        return text.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")

    chunks = []
    for name, value in fields.items():
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{quoted(name)}"\r\n\r\n'
                      f"{value}\r\n".encode())
    for name, (filename, content, content_type) in files.items():
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{quoted(name)}"; '
                      f'filename="{quoted(filename)}"\r\nContent-Type: {content_type}\r\n\r\n'.encode()
                      + content + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


class SiteClient:
    """Requests to the site at ``site_path``, answered without a server. ``sessions`` as the
    ``[sessions]`` table or ``--sessions`` flags give them (default: SQLite in SITE/SQLiteDBs)."""

    __test__ = False

    def __init__(self, site_path, *, debug: bool = False, limits: Limits | None = None,
                 sessions: SessionConfig | None = None) -> None:
        self.site = SiteLayout.open(site_path)
        config = sessions or SessionConfig()
        self.sessions = SessionManager(store_for(config, str(self.site.sqlite_dbs)), config)
        self.app, _ = site_application(self.site, sessions=self.sessions, debug=debug, limits=limits)
        self.cookies: dict[str, str] = {}

    def get(self, url: str, headers: dict[str, str] | None = None) -> TestResponse:
        return self.request("GET", url, headers=headers)

    def post(self, url: str, data: dict | None = None, files: dict | None = None, json=None,
             headers: dict[str, str] | None = None) -> TestResponse:
        """A form post (``data``: urlencoded; with ``files``, {field: (filename, content, type)},
        multipart as a browser sends it) or a JSON body (``json``)."""
        if json is not None:
            return self.request("POST", url, jsonlib.dumps(json).encode(), "application/json", headers)
        if files:
            body, content_type = multipart_body(data or {}, files)
            return self.request("POST", url, body, content_type, headers)
        return self.request("POST", url, urlencode(data or {}, doseq=True).encode(),
                            "application/x-www-form-urlencoded", headers)

    def request(self, method: str, url: str, body: bytes = b"", content_type: str = "",
                headers: dict[str, str] | None = None) -> TestResponse:
        parts = urlsplit(url)
        environ = {
            "REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": parts.path or "/",
            "QUERY_STRING": parts.query, "REQUEST_URI": url, "SERVER_NAME": "localhost", "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1", "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr,
            "wsgi.multithread": False, "wsgi.multiprocess": False, "wsgi.run_once": False,
        }
        if body or content_type:
            environ["CONTENT_LENGTH"] = str(len(body))
            environ["CONTENT_TYPE"] = content_type
        for name, value in (headers or {}).items():
            environ["HTTP_" + name.upper().replace("-", "_")] = value
        if self.cookies and "HTTP_COOKIE" not in environ:
            environ["HTTP_COOKIE"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        answer = {}

        def start_response(status, response_headers, exc_info=None):
            answer["status"], answer["headers"] = int(status.split()[0]), response_headers

        chunks = self.app(environ, start_response)
        try:
            body_out = b"".join(chunks)
        finally:
            if hasattr(chunks, "close"):
                chunks.close()
        response = TestResponse(answer["status"], answer["headers"], body_out)
        for name, value in answer["headers"]:
            if name.lower() == "set-cookie":
                self._remember(value, response)
        return response

    def _remember(self, set_cookie: str, response: TestResponse) -> None:
        pair, _, attributes = set_cookie.partition(";")
        name, value = next(iter(parse_cookie_header(pair).items()))
        response.cookies[name] = value
        if "max-age=0" in attributes.lower().replace(" ", "") or not value:
            self.cookies.pop(name, None)  # removed by the server
        else:
            self.cookies[name] = value

    def close(self) -> None:
        self.sessions.store.close()
