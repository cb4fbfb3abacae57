"""The handler registry a site's modules fill in from ``init_module(registry)``.

Two ways to reach a handler: a template whose first tag is ``{{% handler:NAME }}`` names it, or a
route maps a URL path (with optional ``<name>`` placeholders) to it and, optionally, a template.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Iterable

from .hooks import Hooks

Handler = Callable[..., object]

_PLACEHOLDER = re.compile(r"<(?:(path):)?([A-Za-z_][A-Za-z0-9_]*)>")
DEFAULT_METHODS = ("GET", "HEAD")


@dataclass
class Route:
    """A URL pattern mapped to a handler, an optional template and the methods it answers."""

    pattern: str
    handler: Handler
    template: str | None
    methods: frozenset[str]
    regex: re.Pattern = field(repr=False)
    csrf: bool = False  #: a form POST (PUT, PATCH, DELETE) to it needs the session's CSRF token

    def match(self, path: str) -> dict[str, str] | None:
        """The placeholder values if ``path`` matches, else None."""
        m = self.regex.fullmatch(path)
        return m.groupdict() if m else None


def compile_pattern(pattern: str) -> re.Pattern:
    """``/users/<id>`` matches one path segment as ``id``; ``/files/<path:rest>`` matches the rest."""
    if not pattern.startswith("/"):
        raise ValueError(f"route {pattern!r} must start with '/'")
    out, pos = [], 0
    for m in _PLACEHOLDER.finditer(pattern):
        out.append(re.escape(pattern[pos:m.start()]))
        out.append(f"(?P<{m.group(2)}>{'.+' if m.group(1) else '[^/]+'})")
        pos = m.end()
    out.append(re.escape(pattern[pos:]))
    return re.compile("".join(out))


class Registry:
    """Named handlers and routes; ``site`` is the SiteLayout (for handlers that open SQLiteDBs)."""

    def __init__(self, site=None) -> None:
        self.site = site
        self.hooks = Hooks()
        self._handlers: dict[str, Handler] = {}
        self._csrf_handlers: set[str] = set()
        self._routes: list[Route] = []
        self._exact: dict[str, Route] = {}  # routes without placeholders, by path
        self._patterned: list[Route] = []  # the others, in registration order

    def handler(self, name: str, func: Handler | None = None, *, csrf: bool = False):
        """Register ``func`` as the handler NAME that templates name in ``{{% handler:NAME }}``.
        ``csrf=True``: a form sent to its page with POST (PUT, PATCH, DELETE) must carry the
        session's CSRF token (else 403).

        Also works as a decorator: ``@registry.handler("NAME")``.
        """
        if func is None:
            return lambda f: self.handler(name, f, csrf=csrf)
        if not callable(func):
            raise TypeError(f"handler {name!r} must be callable, got {type(func).__name__}")
        if name in self._handlers:
            raise ValueError(f"a handler named {name!r} is already registered")
        self._handlers[name] = func
        if csrf:
            self._csrf_handlers.add(name)
        return func

    def route(self, path: str, handler: Handler | None = None, template: str | None = None,
              methods: Iterable[str] = DEFAULT_METHODS, *, csrf: bool = False):
        """Map URL ``path`` to ``handler``; its dict is rendered with ``template`` if given.
        ``csrf=True`` as for :meth:`handler`.

        Without a template, a dict is answered as JSON. Also works as a decorator.
        """
        if handler is None:
            return lambda f: self.route(path, f, template=template, methods=methods, csrf=csrf)
        if not callable(handler):
            raise TypeError(f"handler for route {path!r} must be callable")
        wanted = frozenset(m.upper() for m in methods)
        if "GET" in wanted:
            wanted |= {"HEAD"}
        regex = compile_pattern(path)
        if any(r.pattern == path for r in self._routes):
            raise ValueError(f"route {path!r} is already registered")
        route = Route(path, handler, template, wanted, regex, csrf)
        self._routes.append(route)
        if _PLACEHOLDER.search(path):
            self._patterned.append(route)
        else:
            self._exact[path] = route
        return handler

    def hook(self, event: str, func: Callable | None = None):
        """Run ``func(server, *args)`` at a server event (``child_start``, ``sig_usr2``, ...; see
        fcgi_backend.hooks.EVENTS). Also works as a decorator: ``@registry.hook("child_start")``."""
        if func is None:
            return lambda f: self.hook(event, f)
        return self.hooks.register(event, func)

    def get_handler(self, name: str) -> Handler | None:
        """The handler registered as ``name``, or None."""
        return self._handlers.get(name)

    def handler_needs_csrf(self, name: str) -> bool:
        return name in self._csrf_handlers

    def match(self, path: str) -> tuple[Route, dict[str, str]] | None:
        """The first route (in registration order, exact paths first) matching ``path``."""
        route = self._exact.get(path)
        if route is not None:
            return route, {}
        for route in self._patterned:  # (a path without placeholders matches only itself: looked up above)
            params = route.match(path)
            if params is not None:
                return route, params
        return None

    @property
    def handler_names(self) -> list[str]:
        return sorted(self._handlers)

    @property
    def routes(self) -> list[Route]:
        return list(self._routes)
