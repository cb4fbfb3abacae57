"""The application: a WSGI callable mapping each request to a handler and a mustache view.

Order of dispatch: a registered route for the path; else a template in the webroot that the path
names (whose pragma may name a handler); else 404.
"""

from __future__ import annotations

import logging
import time
import traceback
from typing import Callable

from .errors import HTTPError, RequestInputError, ServerError, error_page
from .registry import Registry
from .limits import Limits
from .request import Request
from .response import Response
from .views import View, ViewCache

log = logging.getLogger("fcgi_backend.app")
access_log = logging.getLogger("fcgi_backend.access")

PAGE_METHODS = frozenset({"GET", "HEAD", "POST"})


class Application:
    """WSGI application serving a site's routes and templates.

    ``debug`` puts tracebacks on 500 pages; without it they go only to the log. ``access_log``
    logs a line per request (Apache's own access log has them anyway).
    """

    def __init__(self, registry: Registry, views: ViewCache, *, debug: bool = False,
                 limits: Limits | None = None, access_log: bool = False) -> None:
        self.registry = registry
        self.views = views
        self.debug = debug
        self.limits = limits or Limits()
        self.access_log = access_log or debug

    def __call__(self, environ: dict, start_response: Callable) -> list[bytes]:
        started = time.perf_counter()
        request = Request(environ, self.limits)
        try:
            response = self.dispatch(request)
        except ServerError as exc:
            log.error("%s %s: %s", request.method, request.path, exc)
            response = self._error_response(exc.status, exc.detail if self.debug else "", exc.headers)
        except HTTPError as exc:
            if exc.detail:
                log.info("%s %s: %s", request.method, request.path, exc)
            response = self._error_response(exc.status, exc.detail, exc.headers)
        except RequestInputError:
            raise  # the server that feeds the input deals with it; nobody is left to answer
        except Exception:
            log.error("%s %s failed\n%s", request.method, request.path, traceback.format_exc().rstrip())
            response = self._error_response(500, debug_text=traceback.format_exc() if self.debug else "")
        except BaseException:
            request.close()
            raise
        if self.access_log:
            access_log.info("%s %s %d %dB %.1fms", request.method, request.path, response.status,
                            len(response.body), (time.perf_counter() - started) * 1000)
        body = response(environ, start_response)
        if not request.has_uploads:
            return body
        # Uploaded files are removed once the response is out (the server calls close()).
        return _ClosingBody(body, request.close)

    def dispatch(self, request: Request) -> Response:
        """The response for ``request``; raises HTTPError for 4xx answers."""
        matched = self.registry.match(request.path)
        if matched is not None:
            route, params = matched
            if request.method not in route.methods:
                raise HTTPError(405, headers=[("Allow", ", ".join(sorted(route.methods)))])
            request.path_params = params
            template = None
            if route.template is not None:
                template = self.views.load_name(route.template)
                if template is None:
                    raise RuntimeError(f"route {route.pattern} names template {route.template!r}, "
                                       f"which is not in the webroot")
            return self._respond(request, route.handler, template)

        view = self.views.locate(request.path)
        if view is None:
            raise HTTPError(404, f"Nothing is at {request.path}.")
        if request.method not in PAGE_METHODS:
            raise HTTPError(405, headers=[("Allow", ", ".join(sorted(PAGE_METHODS)))])
        handler = None
        if view.handler_name is not None:
            handler = self.registry.get_handler(view.handler_name)
            if handler is None:
                raise RuntimeError(f"template {view.name} names handler {view.handler_name!r}, "
                                   f"which no handler module registered")
        return self._respond(request, handler, view)

    def _respond(self, request: Request, handler, view: View | None) -> Response:
        values = handler(request) if handler is not None else {}
        if isinstance(values, Response):
            return values
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise TypeError(f"handler returned {type(values).__name__}; expected a dict or a Response")
        if view is None:
            return Response.json(values)
        return Response(self.views.render(view, values))

    def _error_response(self, status: int, detail: str = "", headers=None, debug_text: str = "") -> Response:
        return Response(error_page(status, detail, debug_text), status=status, headers=headers)


class _ClosingBody(list):
    """A WSGI response body whose close() runs a clean-up after the server has sent it."""

    def __init__(self, chunks: list[bytes], cleanup: Callable[[], None]) -> None:
        super().__init__(chunks)
        self._cleanup = cleanup

    def close(self) -> None:
        self._cleanup()
