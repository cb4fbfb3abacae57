"""Static files of the webroot, as the HTTP flavour serves them (Apache serves them in the FastCGI
flavour): which URL names which file, conditional requests and byte ranges. Pure logic over paths
and header values; the HTTP connection does the sending (with sendfile).

The mapping is the Apache vhost's: a file that exists is static, except ``*.mustache`` templates
(the application renders them); a folder is redirected to its trailing slash, then served by its
``index.html``, else its ``index.mustache`` (the application), else refused (no listings), but for
the webroot itself: without an index, ``/`` is the application's (a route "/", an --app's home
page); any other URL goes to the application (routes, extensionless pages, 404); a file's name
with a slash after it names no file. Nothing outside the webroot is ever served, and a URL with
a hidden segment (starting with a dot: .env, .git/) is refused, as the web server examples
refuse it, but for /.well-known/ (RFC 8615: ACME challenges, security.txt).
"""

from __future__ import annotations

import email.utils
import mimetypes
import os
import re
import stat
from dataclasses import dataclass
from urllib.parse import quote

TEMPLATE_SUFFIX = ".mustache"
INDEX_FILES = ("index.html",)  # then index.mustache, which is the application's
_TEXT_TYPES = ("text/", "application/javascript", "application/json", "image/svg+xml", "application/xml")


@dataclass(frozen=True)
class StaticFile:
    """A file to send, as it was when it was looked up."""

    path: str
    size: int
    mtime: float
    inode: int

    @property
    def etag(self) -> str:
        return f'"{self.inode:x}-{self.size:x}-{int(self.mtime * 1e6):x}"'

    @property
    def last_modified(self) -> str:
        return email.utils.formatdate(self.mtime, usegmt=True)

    @property
    def content_type(self) -> str:
        ctype, encoding = mimetypes.guess_type(self.path, strict=False)
        if ctype is None or encoding is not None:  # unknown, or .gz and the like: bytes as they are
            return "application/octet-stream"
        if ctype.startswith(_TEXT_TYPES):
            return f"{ctype}; charset=utf-8"
        return ctype


@dataclass(frozen=True)
class Lookup:
    """What a URL path names: ``kind`` is "file" (``file``), "redirect" (``location``), "forbidden"
    (a folder without an index), "hidden" (a hidden segment) or "app" (everything the application
    answers)."""

    kind: str
    file: StaticFile | None = None
    location: str = ""


APP = Lookup("app")
HIDDEN = Lookup("hidden")
WELL_KNOWN = ".well-known"


def locate(root: str, url_path: str) -> Lookup:
    """What ``url_path`` (percent-decoded, starting with '/') names under the webroot ``root``
    (its real path: symlinks resolved)."""
    if "\0" in url_path or not url_path.startswith("/"):
        return APP
    segments = [s for s in url_path.split("/") if s]
    if any(s.startswith(".") and s != WELL_KNOWN for s in segments):  # (also "..")
        return HIDDEN
    try:
        st = os.stat(os.path.join(root, *segments))  # most URLs of an application name no file: one call
    except OSError:
        return APP
    target = os.path.realpath(os.path.join(root, *segments))
    if target != root and not target.startswith(root + os.sep):
        return APP  # a symlink out of the webroot
    if stat.S_ISDIR(st.st_mode):
        if not url_path.endswith("/"):
            # rebuilt from the segments: "//host" would send a browser to that host, and a header
            # holds no raw space or non-Latin letter
            return Lookup("redirect", location="/" + "".join(quote(s) + "/" for s in segments))
        for name in INDEX_FILES:
            index = os.path.join(target, name)
            try:
                ist = os.stat(index)
            except OSError:
                continue
            if stat.S_ISREG(ist.st_mode):
                return Lookup("file", StaticFile(index, ist.st_size, ist.st_mtime, ist.st_ino))
        if not segments or os.path.isfile(os.path.join(target, "index" + TEMPLATE_SUFFIX)):
            return APP
        return Lookup("forbidden")
    if not stat.S_ISREG(st.st_mode) or target.endswith(TEMPLATE_SUFFIX) or url_path.endswith("/"):
        return APP
    return Lookup("file", StaticFile(target, st.st_size, st.st_mtime, st.st_ino))


def precondition_status(file: StaticFile, if_match: str | None, if_unmodified_since: str | None,
                        if_none_match: str | None, if_modified_since: str | None, now: float) -> int:
    """RFC 9110 13.2.2's order for a GET or HEAD of ``file``: 412 when If-Match names none of its
    tags (strong comparison) or, without If-Match, If-Unmodified-Since is before its change; 304
    when If-None-Match names it (weak comparison) or, without If-None-Match, it has not changed
    since If-Modified-Since; else 0 (serve it). A date that is not an HTTP-date is ignored, and so
    is an If-Modified-Since later than ``now`` (as Apache does: no client can have seen it then)."""
    if if_match is not None:
        if not _lists_tag(if_match, file.etag, weak=False):
            return 412
    elif if_unmodified_since is not None:
        since = _http_date(if_unmodified_since)
        if since is not None and int(file.mtime) > since:
            return 412
    if if_none_match is not None:
        return 304 if _lists_tag(if_none_match, file.etag, weak=True) else 0
    if if_modified_since is not None:
        since = _http_date(if_modified_since)
        if since is not None and since <= now and int(file.mtime) <= since:
            return 304
    return 0


def _lists_tag(field: str, etag: str, weak: bool) -> bool:
    """Whether an If-Match / If-None-Match list holds "*" or ``etag`` (a strong tag of ours); a
    weak tag (W/"...") matches only in the weak comparison."""
    for tag in field.split(","):
        tag = tag.strip()
        if tag == "*":
            return True
        if weak:
            tag = tag.removeprefix("W/")
        if tag == etag:
            return True
    return False


def _http_date(value: str) -> float | None:
    """An HTTP-date as a timestamp, None if it is not one (RFC 9110 5.6.7)."""
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


_BYTE_RANGE = re.compile(r"\s*([0-9]*)\s*-\s*([0-9]*)\s*")  # first-last, -suffix or first-


class RangeNotSatisfiable(Exception):
    """A Range header none of whose ranges lies inside the file (416)."""


def byte_range(header: str | None, size: int, if_range: str | None, file: StaticFile) -> tuple[int, int] | None:
    """(first, last) byte to send for a Range header, inclusive; None for the whole file.

    One range is served (206); a header with several, or one this server does not read, gets the
    whole file (200), as RFC 9110 allows. If-Range that does not match the file also gets it whole.
    """
    if header is None or header[:6].lower() != "bytes=" or "," in header or size == 0:
        return None  # (an empty file has no range to send: Apache sends it whole too)
    if if_range is not None and if_range.strip() not in (file.etag, file.last_modified):
        return None
    spec = _BYTE_RANGE.fullmatch(header[len("bytes="):])
    if spec is None or not (spec[1] or spec[2]):
        return None  # not RFC 9110's 1*DIGIT (int() would take "-1", "1_0" and other scripts' digits)
    first, last = spec.groups()
    if first:
        start = int(first)
        end = int(last) if last else size - 1
    else:  # the last N bytes
        suffix = int(last)
        if suffix == 0:
            raise RangeNotSatisfiable()
        start, end = max(0, size - suffix), size - 1
    if start >= size:
        raise RangeNotSatisfiable()
    if start < 0 or end < start:
        return None
    return start, min(end, size - 1)
