"""Mustache views: templates found in the webroot, parsed once per process, re-read when changed.

A template's first tag may be the pragma ``{{% handler:NAME }}``: the handler registered as NAME
supplies its values. Partials (``{{> header}}``) resolve from the webroot. No path, from a URL or a
partial tag, ever leads outside the webroot.
"""

from __future__ import annotations

import html
import logging
import os
import re
import time
import weakref
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pystache
import pystache.defaults
from pystache.context import ContextStack
from pystache.parsed import ParsedTemplate
from pystache.renderengine import RenderEngine

from .template_compiler import Render, compile_template

log = logging.getLogger("fcgi_backend.views")

EXTENSION = ".mustache"
INDEX = "index" + EXTENSION
_FIRST_TAG = re.compile(r"\{\{")
_PRAGMA = re.compile(r"\{\{%\s*handler\s*:\s*([^\s}]+)\s*\}\}[ \t]*(?:\r?\n)?")
# How long a URL's resolved template file is trusted before the webroot is searched again (the file
# itself is still checked for changes on every request).
_RESOLVE_SECONDS = 2.0
_NEEDS_ESCAPE = re.compile("[&<>\"']").search  # what html.escape replaces


class TemplateError(Exception):
    """A template exists but cannot be read or parsed."""


@dataclass(frozen=True)
class View:
    """A parsed template: its file, name relative to the webroot, and the handler it names, if any."""

    path: Path
    name: str
    handler_name: str | None
    source: str
    parsed: ParsedTemplate


def split_pragma(text: str) -> tuple[str | None, str]:
    """(handler name, template without the pragma) if the first tag is ``{{% handler:NAME }}``."""
    first = _FIRST_TAG.search(text)
    if first is None:
        return None, text
    m = _PRAGMA.match(text, first.start())
    if m is None:
        return None, text
    return m.group(1), text[:m.start()] + text[m.end():]


def template_candidates(url_path: str) -> list[str]:
    """Webroot-relative template names a URL path may mean, most specific first.

    ``/about`` -> about.mustache, about/index.mustache; ``/`` -> index.mustache. A path with a
    ``..`` segment or a NUL byte means nothing.
    """
    if "\0" in url_path:
        return []
    parts = [p for p in url_path.split("/") if p not in ("", ".")]
    if ".." in parts:
        return []
    rel = "/".join(parts)
    if not rel:
        return [INDEX]
    if rel.endswith(EXTENSION):
        return [rel]
    if url_path.endswith("/"):
        return [f"{rel}/{INDEX}"]
    return [rel + EXTENSION, f"{rel}/{INDEX}"]


@lru_cache(maxsize=2048)
def _parse(template: str, delimiters) -> ParsedTemplate:
    return pystache.parse(template, delimiters, raise_on_mismatch=True)


class _CachingRenderEngine(RenderEngine):
    """pystache's engine that parses each distinct string it renders (partials, lambdas' results)
    once, and renders each parsed template through the function compiled once (template_compiler)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._compiled: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def compiled(self, parsed: ParsedTemplate) -> Render:
        render = self._compiled.get(parsed)
        if render is None:
            render = self._compiled[parsed] = compile_template(parsed, self)
        return render

    def render(self, template, context_stack, delimiters=None):
        if delimiters is not None:  # (a list once a template changed them: the parse cache keys on it)
            delimiters = tuple(delimiters)
        return self.compiled(_parse(template, delimiters))(context_stack)


class _Renderer(pystache.Renderer):
    _engine = None

    def _make_render_engine(self):
        # The engine holds no per-render state, so one serves every render of this renderer.
        if self._engine is None:
            self._engine = _CachingRenderEngine(
                literal=self._to_unicode_hard,
                escape=self._make_escape(),
                resolve_context=self._make_resolve_context(),
                resolve_partial=self._make_resolve_partial(),
                to_str=self.str_coerce,
            )
        return self._engine

    def _make_escape(self):
        """pystache's escape; with its default (html.escape), a plain str skips its four calls, and
        one with nothing to escape html.escape's five replacements."""
        escape = self._escape_to_unicode
        if self.escape is not pystache.defaults.TAG_ESCAPE:
            return escape

        def escape_html(value):
            if type(value) is str:
                return html.escape(value) if _NEEDS_ESCAPE(value) else value
            return escape(value)
        return escape_html


class _WebrootPartials:
    """The partial loader pystache asks by name: ``header`` is webroot/header.mustache."""

    def __init__(self, views: "ViewCache") -> None:
        self._views = views
        self._reported: set[str] = set()

    def get(self, name: str) -> str | None:
        rel = name if name.endswith(EXTENSION) else name + EXTENSION
        view = self._views.load_name(rel)
        if view is None:
            if name not in self._reported:
                self._reported.add(name)
                log.warning("partial %r not found in the webroot (rendered as empty)", name)
            return None
        return view.source


class ViewCache:
    """Finds, parses and renders the webroot's templates; each file is parsed once per change."""

    def __init__(self, webroot: str | os.PathLike) -> None:
        self.webroot = Path(os.path.realpath(webroot))
        self._root = str(self.webroot) + os.sep
        self._views: dict[str, tuple[tuple[int, int, int], View]] = {}
        self._resolved: dict[str, tuple[float, str]] = {}  # webroot-relative name -> (when, real path)
        self._renderer = _Renderer(partials=_WebrootPartials(self), missing_tags="ignore")

    def _inside(self, rel: str) -> str | None:
        """The real path of webroot/rel if it is a file inside the webroot (symlinks resolved)."""
        now = time.monotonic()
        cached = self._resolved.get(rel)
        if cached is not None and now - cached[0] < _RESOLVE_SECONDS:
            return cached[1]
        if "\0" in rel or rel.startswith("/"):
            return None
        path = os.path.join(self._root, rel)
        # A name that is no file costs one stat (most URLs that reach here are routes or 404s);
        # realpath, an lstat per path segment, then checks only files for a way out of the webroot.
        real = os.path.realpath(path) if os.path.isfile(path) else ""
        if not real.startswith(self._root):
            self._resolved.pop(rel, None)
            return None
        self._resolved[rel] = (now, real)
        return real

    def locate(self, url_path: str) -> View | None:
        """The view a URL path names, or None."""
        for rel in template_candidates(url_path):
            view = self.load_name(rel)
            if view is not None:
                return view
        return None

    def load_name(self, rel: str) -> View | None:
        """The view at webroot-relative ``rel``, or None if no such file is inside the webroot."""
        path = self._inside(rel)
        if path is None:
            return None
        view = self._load(path)
        if view is None:  # gone since it was resolved
            self._resolved.pop(rel, None)
        return view

    def _load(self, path: str) -> View | None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        cached = self._views.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            with open(path, encoding="utf-8", newline="") as f:  # (line ends as written: CRLF stays)
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise TemplateError(f"cannot read template {path}: {exc}") from None
        handler_name, source = split_pragma(text)
        try:
            parsed = _parse(source, None)
        except Exception as exc:  # pystache raises ParsingError or plain Exception
            raise TemplateError(f"cannot parse template {path}: {exc}") from None
        view = View(Path(path), path[len(self._root):], handler_name, source, parsed)
        if cached is not None:
            log.info("template %s changed; re-read", view.name)
        self._views[path] = (stamp, view)
        return view

    def render(self, view: View, values: dict | None) -> str:
        """The view rendered with ``values`` (HTML-escaped unless a triple mustache says otherwise)."""
        engine = self._renderer._make_render_engine()
        return engine.compiled(view.parsed)(ContextStack(values or {}))  # (create's result for one dict)
