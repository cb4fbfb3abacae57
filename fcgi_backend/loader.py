"""Loading the site's handler modules and calling each one's ``init_module(registry)``.

The modules in ``handlers/`` are imported as the package ``site_handlers``, so they can share code
with relative imports (``from . import common``) without shadowing anything on ``sys.path``.
Files whose name starts with ``_`` are helpers: imported only when another module imports them.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
import traceback
import types
from pathlib import Path

from .registry import Registry

log = logging.getLogger("fcgi_backend.loader")

PACKAGE = "site_handlers"


class HandlerLoadError(Exception):
    """A handler module failed to import or to initialise; the message names it and says why."""


def _module_names(handlers_dir: Path) -> list[str]:
    names = []
    for entry in sorted(handlers_dir.iterdir()):
        if entry.name.startswith(("_", ".")):
            continue
        if entry.suffix == ".py" and entry.is_file():
            names.append(entry.stem)
        elif entry.is_dir() and (entry / "__init__.py").is_file():
            names.append(entry.name)
    return names


def _where(exc: BaseException, handlers_dir: Path) -> str:
    """'file.py line N' of the innermost frame inside the handlers folder, if any."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{Path(exc.filename).name} line {exc.lineno}"
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if Path(frame.filename).resolve().is_relative_to(handlers_dir):
            return f"{Path(frame.filename).name} line {frame.lineno}"
    return ""


def _fresh_package(handlers_dir: Path) -> None:
    for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
        del sys.modules[name]
    package = types.ModuleType(PACKAGE)
    package.__path__ = [str(handlers_dir)]
    package.__package__ = PACKAGE
    sys.modules[PACKAGE] = package


def load_handlers(handlers_dir: Path, registry: Registry) -> list[str]:
    """Import every handler module in ``handlers_dir`` and call its ``init_module(registry)``.

    Returns the names of the modules loaded. A module that fails raises HandlerLoadError naming it.
    """
    handlers_dir = handlers_dir.resolve()
    if not handlers_dir.is_dir():
        log.warning("no handlers/ folder at %s: only templates without a handler will be served", handlers_dir)
        return []
    _fresh_package(handlers_dir)
    loaded = []
    for name in _module_names(handlers_dir):
        step = "import"
        try:
            module = importlib.import_module(f"{PACKAGE}.{name}")
            init = getattr(module, "init_module", None)
            if init is None:
                log.warning("handler module %s has no init_module(registry); nothing registered from it", name)
            else:
                step = "init_module"
                init(registry)
        except Exception as exc:
            where = _where(exc, handlers_dir)
            log.debug("traceback of handler module %s:", name, exc_info=True)
            raise HandlerLoadError(
                f"handler module {name!r} failed in {step}"
                f"{' at ' + where if where else ''}: {type(exc).__name__}: {exc}") from exc
        loaded.append(name)
    log.info("loaded handler modules: %s; handlers: %s; routes: %s",
             ", ".join(loaded) or "none", ", ".join(registry.handler_names) or "none",
             ", ".join(r.pattern for r in registry.routes) or "none")
    return loaded


def load_wsgi_app(spec: str):
    """The WSGI callable named by ``MODULE:NAME`` or ``path/to/file.py:NAME``, as gunicorn finds
    it; HandlerLoadError if not.

    A MODULE is imported with the current folder first on ``sys.path`` (a ``django-admin
    startproject`` folder: ``mysite.wsgi:application``). A FILE.py is imported as the module named
    after it, registered in ``sys.modules`` (frameworks look their settings and URL modules up
    there), with its folder first on ``sys.path`` so it imports its neighbours. NAME may be dotted
    (``app:server.wsgi``).
    """
    target, sep, name = spec.rpartition(":")
    if not sep or not target or not name:
        raise HandlerLoadError(f"--app wants MODULE:CALLABLE or FILE.py:CALLABLE, got {spec!r}")
    try:
        if target.endswith(".py"):
            module = _import_file(Path(target).resolve())
        else:
            _put_first_on_path(os.getcwd())
            module = importlib.import_module(target)
    except Exception as exc:
        raise HandlerLoadError(f"WSGI application {spec!r} failed to import: {type(exc).__name__}: {exc}") from exc
    app = module
    for part in name.split("."):
        app = getattr(app, part, None)
    if not callable(app):
        raise HandlerLoadError(f"WSGI application {spec!r}: {target} has no callable named {name!r}")
    return app


def _put_first_on_path(folder: str) -> None:
    if folder in sys.path:
        sys.path.remove(folder)
    sys.path.insert(0, folder)


def _import_file(path: Path) -> types.ModuleType:
    if not path.is_file():
        raise ImportError(f"no such file: {path}")
    _put_first_on_path(str(path.parent))
    module_spec = importlib.util.spec_from_file_location(path.stem, path)
    if module_spec is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[path.stem] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[path.stem]
        raise
    return module
