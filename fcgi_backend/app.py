"""The application: a WSGI callable mapping each request to a handler and a mustache view.

Order of dispatch: a registered route for the path; else a template in the webroot that the path
names (whose pragma may name a handler); else 404.
"""

from __future__ import annotations

import logging
import traceback
from typing import TYPE_CHECKING, Callable

from .errors import HTTPError, RequestInputError, ServerError, error_page, reason_phrase
from .registry import Registry
from .limits import Limits
from .loader import load_handlers
from .request import Request
from .sessions import SessionManager, check_csrf
from .response import Response
from .views import View, ViewCache

if TYPE_CHECKING:
    from .hooks import Hooks

log = logging.getLogger("fcgi_backend.app")

ERROR_PAGES = "errors/"  # webroot/errors/404.mustache and the like: the site's own error pages
PAGE_METHODS = frozenset({"GET", "HEAD", "POST"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})


class Application:
    """WSGI application serving a site's routes and templates.

    ``debug`` puts tracebacks on 500 pages; without it they go only to the log. ``sessions``
    gives handlers ``request.session``.
    """

    def __init__(self, registry: Registry, views: ViewCache, *, debug: bool = False,
                 limits: Limits | None = None, sessions: SessionManager | None = None) -> None:
        self.registry = registry
        self.views = views
        self.debug = debug
        self.limits = limits or Limits()
        self.sessions = sessions

    def __call__(self, environ: dict, start_response: Callable) -> list[bytes]:
        request = Request(environ, self.limits, self.sessions)
        try:
            response = self._answer(request)
            session = request.loaded_session
            if session is not None:  # saved (if changed) and released before the answer leaves
                try:
                    response.headers += self.sessions.finish(session, environ)
                except ServerError as exc:
                    response = self._server_error(request, exc)
        except BaseException:
            request.release_session()
            request.close()
            raise
        body = response(environ, start_response)
        if not request.has_uploads:
            return body
        # Uploaded files are removed once the response is out (the server calls close()).
        return _ClosingBody(body, request.close)

    def _answer(self, request: Request) -> Response:
        """The handler's response, or the error page of what went wrong (RequestInputError aside:
        nobody is left to answer, and the server that feeds the input deals with it)."""
        try:
            return self.dispatch(request)
        except ServerError as exc:
            request.release_session()  # a failed request changes no session
            return self._server_error(request, exc)
        except HTTPError as exc:
            if exc.detail:
                log.info("%s %s: %s", request.method, request.path, exc)
            return self._error_response(request, exc.status, exc.detail, exc.headers)
        except RequestInputError:
            raise
        except Exception:
            request.release_session()
            log.error("%s %s failed", request.method, request.path, exc_info=True)
            return self._error_response(request, 500, debug_text=traceback.format_exc() if self.debug else "")

    def _server_error(self, request: Request, exc: ServerError) -> Response:
        log.error("%s %s: %s", request.method, request.path, exc)
        return self._error_response(request, exc.status, exc.detail if self.debug else "", exc.headers)

    def dispatch(self, request: Request) -> Response:
        """The response for ``request``; raises HTTPError for 4xx answers."""
        matched = self.registry.match(request.path)
        if matched is not None:
            route, params = matched
            request.route = route
            if request.method not in route.methods:
                raise HTTPError(405, headers=[("Allow", ", ".join(sorted(route.methods)))])
            request.path_params = params
            if route.csrf:
                self._check_csrf(request)
            template = None
            if route.template is not None:
                template = self.views.load_name(route.template)
                if template is None:
                    raise RuntimeError(f"route {route.pattern} names template {route.template!r}, "
                                       f"which is not in the webroot")
            return self._respond(request, route.handler, template)

        view = self.views.locate(request.path)
        if view is None or view.name.startswith(ERROR_PAGES):  # error pages are not pages of their own
            raise HTTPError(404, f"Nothing is at {request.path}.")
        if request.method not in PAGE_METHODS:
            raise HTTPError(405, headers=[("Allow", ", ".join(sorted(PAGE_METHODS)))])
        handler = None
        if view.handler_name is not None:
            handler = self.registry.get_handler(view.handler_name)
            if handler is None:
                raise RuntimeError(f"template {view.name} names handler {view.handler_name!r}, "
                                   f"which no handler module registered")
            if self.registry.handler_needs_csrf(view.handler_name):
                self._check_csrf(request)
        return self._respond(request, handler, view)

    def _check_csrf(self, request: Request) -> None:
        """A request that changes things (POST, PUT, PATCH, DELETE) carries the session's token."""
        if request.method in SAFE_METHODS:
            return
        form = request.form if request.content_type in FORM_TYPES else None
        check_csrf(request.session, request.environ, form)

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
        if self.sessions is not None and "csrf_token" not in values:
            # A template may write {{csrf_token}} in its forms: the session is opened only if it does.
            values = {**values, "csrf_token": lambda: request.session.csrf_token()}
        return Response(self.views.render(view, values))

    def _error_response(self, request: Request, status: int, detail: str = "", headers=None,
                        debug_text: str = "") -> Response:
        """The error's answer: JSON for a JSON route (or a client that asks only for JSON), else
        the site's page webroot/errors/STATUS.mustache if there is one, else a plain page."""
        if wants_json(request):
            error = {"status": status, "error": reason_phrase(status), "detail": detail}
            if debug_text:
                error["traceback"] = debug_text
            response = Response.json(error, status=status)
        else:
            response = Response(self._site_error_page(status, detail, debug_text)
                                or error_page(status, detail, debug_text), status=status)
        response.headers += headers or []
        return response

    def _site_error_page(self, status: int, detail: str, debug_text: str) -> str | None:
        try:
            view = self.views.load_name(f"{ERROR_PAGES}{status}.mustache")
            if view is None:
                return None
            return self.views.render(view, {"status": status, "title": reason_phrase(status), "detail": detail,
                                            "debug": debug_text})
        except Exception:  # a broken error page must not hide the error it was to show
            log.error("error page %s%d.mustache failed; the plain page is sent", ERROR_PAGES, status, exc_info=True)
            return None


def wants_json(request: Request) -> bool:
    """A route answered with JSON (no template) answers its errors in JSON too; so does any request
    whose Accept names JSON and not HTML."""
    route = request.route
    if route is not None and route.template is None:
        return True
    accept = request.headers.get("Accept", "")
    return "json" in accept and "html" not in accept


def site_application(site, *, sessions: SessionManager | None = None, debug: bool = False,
                     limits: Limits | None = None) -> tuple[Application, "Hooks"]:
    """The site's handler modules loaded afresh into an Application, and the hooks they registered
    (the server at start and on each reload; the test client)."""
    registry = Registry(site)
    load_handlers(site.handlers, registry)
    return Application(registry, ViewCache(site.webroot), debug=debug, limits=limits, sessions=sessions), registry.hooks


class _ClosingBody(list):
    """A WSGI response body whose close() runs a clean-up after the server has sent it."""

    def __init__(self, chunks: list[bytes], cleanup: Callable[[], None]) -> None:
        super().__init__(chunks)
        self._cleanup = cleanup

    def close(self) -> None:
        self._cleanup()
