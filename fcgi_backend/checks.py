"""``fcgi-backend check``: what would fail at request time, found before any request comes.

Every ``.mustache`` file in the webroot is read and scanned for tags that do not close, sections
that end wrongly or never, handler pragmas naming no registered handler and partials that name no
file; every route's template must exist. Each problem is one line that starts with where it is
(``FILE:LINE:COLUMN``). The scan is pure (:func:`scan_template`); :func:`check_site` reads files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .views import EXTENSION, ViewCache, split_pragma

_SIGILS = frozenset("#^/>!=&{%")  # what a tag may start with besides a name
_SET_DELIMITERS = re.compile(r"=\s*(\S+)\s+(\S+)\s*=")


@dataclass
class TemplateScan:
    """What a template's tags say: problems (with line and column) and the partials it includes."""

    problems: list[str] = field(default_factory=list)
    partials: list[tuple[str, int, int]] = field(default_factory=list)  # (name, line, column)


def line_and_column(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a character offset."""
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def scan_template(text: str) -> TemplateScan:
    """Walk the tags of a mustache template as the spec reads them (set-delimiter tags included)."""
    scan = TemplateScan()
    opening, closing = "{{", "}}"
    sections: list[tuple[str, int]] = []  # (name, offset of its opening tag)
    pos = 0
    while True:
        start = text.find(opening, pos)
        if start < 0:
            break
        inner_start = start + len(opening)
        end_marker = closing
        if text.startswith("{", inner_start) and opening == "{{":
            end_marker = "}" + closing  # {{{name}}}
        end = text.find(end_marker, inner_start)
        if end < 0:
            scan.problems.append(_at(text, start, f"tag {text[start:start + 20]!r} is never closed "
                                                   f"(no {end_marker!r} follows)"))
            return scan
        tag = text[inner_start:end].strip()
        pos = end + len(end_marker)
        sigil, name = (tag[:1], tag[1:].strip()) if tag[:1] in _SIGILS else ("", tag)
        if sigil == "!" or sigil == "%":
            continue  # a comment, or a pragma (the handler pragma is checked apart)
        if sigil == "=":
            m = _SET_DELIMITERS.fullmatch(tag)
            if m is None:
                scan.problems.append(_at(text, start, f"set-delimiter tag {tag!r} is not '=OPEN CLOSE='"))
                return scan
            opening, closing = m.groups()
            continue
        if not name:
            scan.problems.append(_at(text, start, "empty tag"))
        elif sigil in ("#", "^"):
            sections.append((name, start))
        elif sigil == "/":
            if not sections:
                scan.problems.append(_at(text, start, f"{{{{/{name}}}}} closes a section that was never opened"))
            elif sections[-1][0] != name:
                open_name, open_at = sections.pop()
                line, column = line_and_column(text, open_at)
                scan.problems.append(_at(text, start, f"{{{{/{name}}}}} does not close section {open_name!r} "
                                                      f"(opened at {line}:{column})"))
            else:
                sections.pop()
        elif sigil == ">":
            line, column = line_and_column(text, start)
            scan.partials.append((name, line, column))
    for name, open_at in sections:
        scan.problems.append(_at(text, open_at, f"section {name!r} is never closed ({{{{/{name}}}}} missing)"))
    return scan


def _at(text: str, offset: int, message: str) -> str:
    line, column = line_and_column(text, offset)
    return f"{line}:{column}: {message}"


def check_site(site, registry) -> list[str]:
    """One line per problem a request to ``site`` would meet, with ``registry`` holding its handlers."""
    views = ViewCache(site.webroot)
    webroot = Path(views.webroot)
    problems = []
    for path in sorted(webroot.rglob("*" + EXTENSION)):
        where = f"webroot/{path.relative_to(webroot)}"
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            problems.append(f"{where}: not UTF-8 (byte {exc.start})")
            continue
        except OSError as exc:
            problems.append(f"{where}: cannot be read: {exc.strerror}")
            continue
        handler_name, _ = split_pragma(text)
        if handler_name is not None and registry.get_handler(handler_name) is None:
            line, column = line_and_column(text, text.index("{{"))
            problems.append(f"{where}:{line}:{column}: names handler {handler_name!r}, which no handler module "
                            f"registered")
        scan = scan_template(text)
        problems += [f"{where}:{problem}" for problem in scan.problems]
        for name, line, column in scan.partials:
            rel = name if name.endswith(EXTENSION) else name + EXTENSION
            if views.load_name(rel) is None:
                problems.append(f"{where}:{line}:{column}: partial {name!r} has no file (webroot/{rel})")
    for route in registry.routes:
        if route.template is not None and views.load_name(route.template) is None:
            problems.append(f"route {route.pattern}: template {route.template!r} has no file in the webroot")
    return problems
