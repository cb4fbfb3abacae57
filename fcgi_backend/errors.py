"""HTTP errors a handler can raise, and the pages that show them."""

from __future__ import annotations

import html
from http.client import responses


class RequestInputError(Exception):
    """The request's input broke off or was malformed; no response can reach the client."""


class RequestTimeout(BaseException):
    """A request ran past request_timeout (raised in the worker by SIGALRM). A BaseException, so an
    application's ``except Exception`` does not swallow it."""


class HTTPError(Exception):
    """Raise from a handler to answer with this status and an error page (``HTTPError(403)``)."""

    def __init__(self, status: int, detail: str = "", headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(f"{status} {reason_phrase(status)}{': ' + detail if detail else ''}")
        self.status = status
        self.detail = detail
        self.headers = headers or []


class ServerError(HTTPError):
    """A failure on the server's side (a full disk, a missing folder): the page names only the
    status, since the detail may hold OS error text or paths; the log gets the detail (and so does
    the page with --debug)."""

    def __init__(self, detail: str, status: int = 500) -> None:
        super().__init__(status, detail)


class NotFound(HTTPError):
    """404: nothing here."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(404, detail)


def reason_phrase(status: int) -> str:
    """'Not Found' for 404; 'Unknown' for a code Python does not name."""
    return responses.get(status, "Unknown")  # (http.client's table: no enum look-up per answer)


def error_page(status: int, detail: str = "", debug_text: str = "") -> str:
    """A small HTML page for an error status; ``debug_text`` (a traceback) only when debug is on."""
    title = f"{status} {reason_phrase(status)}"
    body = f"<h1>{html.escape(title)}</h1>"
    if detail:
        body += f"<p>{html.escape(detail)}</p>"
    if debug_text:
        body += f"<pre>{html.escape(debug_text)}</pre>"
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"</head><body>{body}</body></html>\n")
