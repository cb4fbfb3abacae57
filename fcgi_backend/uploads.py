"""multipart/form-data bodies, parsed by the C parser in connector_c/ (through cffi).

File parts stream to temporary files in ``Limits.upload_dir``; other parts stay in memory. The
temporary files belong to the request: they are removed when it ends unless the handler moved or
kept them.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import unicodedata
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote

from ._multipart import ffi, lib
from .datastructures import MultiDict
from .digits import decimal
from .errors import HTTPError, RequestInputError, ServerError
from .limits import Limits
from .pace import Pace

_READ_CHUNK = 256 * 1024
_STDIN_BUFFER = 1024 * 1024  # what the C STDIN reader reads into
STDIN_HANDOVER_MAX = _STDIN_BUFFER // 2  #: most already-received bytes read_stdin_records takes
# Runs of anything but letters and digits (of any script), '_', '.' and '-'.
_UNSAFE_FILENAME_CHARS = re.compile(r"[^\w.-]+")
_MAX_FILENAME_BYTES = 200  # well under the 255 bytes most file systems allow in one name
_UPLOAD_MORE, _UPLOAD_DONE, _UPLOAD_ERROR = 0, 1, -1
# Temporary files are "fcgi-upload-<worker pid>-XXXXXX" (UPLOAD_FILE_PREFIX in upload.h); kept
# ones "fcgi-kept-<pid>-XXXXXX".
UPLOAD_FILE_PREFIX = "fcgi-upload-"
_KEPT_FILE_PREFIX = "fcgi-kept-"


class UploadedFile:
    """One file part of a multipart body, already on disk at ``path``."""

    def __init__(self, name: str, filename: str, content_type: str, size: int, path: str | None) -> None:
        self.name = name
        self.filename = filename
        self.content_type = content_type
        self.size = size
        self.path = Path(path) if path is not None else None  # None: parsed without storing
        self.kept = False

    @property
    def safe_filename(self) -> str:
        """The browser's filename made safe to use as a name on disk: the last segment of a path
        (``/`` or ``\\``), letters and digits of any script, '.', '_' and '-', no leading dot, at
        most 200 bytes; a stem with nothing left is "upload" (``😀.txt`` -> ``upload.txt``)."""
        return safe_filename(self.filename)

    def open(self, mode: str = "rb") -> BinaryIO:
        """The file's content, opened for reading."""
        return open(self.path, mode)

    def read(self) -> bytes:
        """The whole content (mind the size: it may be large)."""
        return self.path.read_bytes()

    def save(self, destination: str | os.PathLike) -> Path:
        """Copy the content to ``destination``; the temporary file is still removed at the end."""
        return Path(shutil.copyfile(self.path, destination))

    def move(self, destination: str | os.PathLike) -> Path:
        """Move the file to ``destination`` (a rename when on the same file system), replacing a
        file there; it is now yours. To keep every visitor's file, :meth:`move_into`."""
        self.path = Path(shutil.move(str(self.path), os.fspath(destination)))
        self.kept = True
        return self.path

    def move_into(self, folder: str | os.PathLike) -> Path:
        """Move the file into ``folder`` under its :attr:`safe_filename`, or ``name-2.ext``,
        ``name-3.ext``... when that is taken: a file already there is never replaced (two visitors
        sending ``photo.jpg`` keep both). Returns its path; the file is now yours."""
        stem, dot, extension = self.safe_filename.rpartition(".")
        if not dot:
            stem, extension = self.safe_filename, ""
        for number in itertools.count(1):
            target = Path(folder) / (f"{stem}{'' if number == 1 else f'-{number}'}{dot}{extension}")
            try:
                _place_without_replacing(self.path, target)
            except FileExistsError:
                continue
            self.path.unlink()
            self.path, self.kept = target, True
            return target

    def keep(self) -> Path:
        """Leave the file in the upload folder after the request, under a name that no longer marks
        it as temporary (the supervisor removes those of workers that die); it is now yours to
        remove. Returns its path."""
        if not self.kept:
            kept = self.path.with_name(self.path.name.replace(UPLOAD_FILE_PREFIX, _KEPT_FILE_PREFIX, 1))
            os.link(self.path, kept)  # never replaces an existing file
            self.path.unlink()
            self.path = kept
            self.kept = True
        return self.path

    def discard(self) -> None:
        """Remove the temporary file unless it was kept or moved."""
        if not self.kept and self.path is not None:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    def __repr__(self) -> str:
        return f"<UploadedFile {self.name}={self.filename!r} {self.content_type} {self.size} bytes>"


def remove_upload_files(directory: str, pid: int) -> tuple[int, int]:
    """Remove the temporary upload files of worker ``pid`` in ``directory``: (how many, bytes)."""
    return _remove_matching(directory, lambda owner: owner == pid)


def remove_stale_upload_files(directory: str) -> tuple[int, int]:
    """Remove temporary upload files whose worker is not running: (how many, bytes)."""
    return _remove_matching(directory, lambda owner: not _process_exists(owner))


def _remove_matching(directory: str, owner_gone) -> tuple[int, int]:
    count = size = 0
    with os.scandir(directory) as entries:
        for entry in entries:
            if not entry.name.startswith(UPLOAD_FILE_PREFIX):
                continue
            owner = entry.name[len(UPLOAD_FILE_PREFIX):].partition("-")[0]
            if not owner.isdigit() or not owner_gone(int(owner)):
                continue
            try:
                size += entry.stat(follow_symlinks=False).st_size
                os.unlink(entry.path)
                count += 1
            except FileNotFoundError:
                pass
    return count, size


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _place_without_replacing(source: Path, target: Path) -> None:
    """``source``'s content at ``target`` (FileExistsError if that is taken): a hard link, or
    across file systems (or where links are not allowed) a copy into a file created anew."""
    try:
        os.link(source, target)
        return
    except FileExistsError:
        raise
    except OSError:
        pass
    with open(source, "rb") as src, open(target, "xb") as dst:
        try:
            shutil.copyfileobj(src, dst, 1024 * 1024)
        except BaseException:
            dst.close()
            target.unlink()  # no partial file
            raise


def safe_filename(filename: str) -> str:
    """See :attr:`UploadedFile.safe_filename`."""
    base = unicodedata.normalize("NFC", re.split(r"[/\\]", filename)[-1])
    stem, dot, extension = base.rpartition(".")
    if not dot:
        stem, extension = base, ""
    stem = _UNSAFE_FILENAME_CHARS.sub("_", stem).strip("._") or "upload"
    extension = _UNSAFE_FILENAME_CHARS.sub("_", extension).strip("._")
    room = _MAX_FILENAME_BYTES - len(extension.encode()) - 1
    if room < 1:  # an absurd extension: keep only the stem
        extension, room = "", _MAX_FILENAME_BYTES
    stem = stem.encode()[:room].decode("utf-8", "ignore")
    return f"{stem}.{extension}" if extension else stem


def boundary_from_content_type(content_type: str) -> bytes | None:
    """The boundary parameter of a multipart Content-Type, or None if missing or invalid."""
    raw = content_type.encode("latin-1", "replace")
    out = ffi.new("char[]", 72)
    n = lib.upload_boundary_from_content_type(raw, len(raw), out)
    return ffi.string(out, n) if n > 0 else None


def _text(ptr) -> str | None:
    return None if ptr == ffi.NULL else ffi.string(ptr).decode("utf-8", "replace")


def _decode_ext_value(value: str) -> str | None:
    """RFC 5987 ``charset'lang'percent-encoded`` (filename*), or None if it is not one."""
    charset, sep, rest = value.partition("'")
    _, sep2, encoded = rest.partition("'")
    if not (sep and sep2):
        return None
    try:
        return unquote(encoded, encoding=charset or "utf-8", errors="replace")
    except LookupError:
        return None


class MultipartUpload:
    """One multipart body being parsed: feed it bytes (or a file descriptor), then take the results."""

    STDIN_HANDOVER_MAX = STDIN_HANDOVER_MAX

    def __init__(self, boundary: bytes, limits: Limits, store_files: bool = True) -> None:
        """``store_files=False`` parses without writing files: their parts are only counted."""
        self.limits = limits
        c_limits = ffi.new("upload_limits *", {
            "max_body": limits.max_body, "max_file": limits.max_file,
            "max_field_memory": limits.max_memory, "max_parts": limits.max_parts,
            "max_header": limits.max_part_header, "read_timeout_ms": int(limits.read_timeout * 1000),
            "direct_after": limits.upload_direct_io,
        })
        directory = os.fsencode(limits.upload_dir) if store_files else ffi.NULL
        handle = lib.upload_new(boundary, len(boundary), directory, c_limits)
        if handle == ffi.NULL:
            raise MemoryError("cannot allocate a multipart upload")
        self._handle = ffi.gc(handle, lib.upload_free)
        self._stdin_buffer = None
        self.done = False
        if lib.upload_error_status(handle):  # the boundary was refused
            self._check(_UPLOAD_ERROR)

    def _check(self, status: int) -> bool:
        if status == _UPLOAD_ERROR:
            http_status = lib.upload_error_status(self._handle)
            message = ffi.string(lib.upload_error_message(self._handle)).decode("utf-8", "replace")
            if http_status == 0:
                raise RequestInputError(message)
            if http_status >= 500:
                raise ServerError(message, http_status)  # OS error text: for the log, not the page
            raise HTTPError(http_status, message)
        self.done = status == _UPLOAD_DONE
        return self.done

    def feed(self, data: bytes | bytearray | memoryview) -> bool:
        """Parse more of the body; True once the closing boundary was read."""
        buffer = data if isinstance(data, bytes) else ffi.from_buffer(data)  # no copy either way
        return self._check(lib.upload_feed(self._handle, buffer, len(data)))

    def read_fd(self, fd: int, length: int, pace: Pace | None = None) -> bool:
        """Read ``length`` body bytes from ``fd`` and parse them, in C without the GIL; with
        ``pace``, the client must keep to it (pace.py). A rejected body is left unread from there
        (:attr:`fd_unread` bytes of it): the caller drops a little of the rest or closes."""
        allowance, seconds_per_byte = (pace.allowance, pace.seconds_per_byte) if pace else (0.0, 0.0)
        return self._check(lib.upload_read_fd(self._handle, fd, length, allowance, seconds_per_byte))

    def read_stdin_records(self, fd: int, request_id: int, buffered: bytes) -> tuple[bool, bytes]:
        """Parse FCGI_STDIN records of ``request_id`` read from ``fd`` in C, after ``buffered`` bytes
        (at most STDIN_HANDOVER_MAX) already received.

        Returns (body complete, bytes left for the caller's record parser). Stops before any other
        record, which stays in the bytes left, and after the record the upload refused: call
        :meth:`check` once the bytes left are back with the record parser.
        """
        if len(buffered) > STDIN_HANDOVER_MAX:
            raise ValueError(f"{len(buffered)} buffered bytes exceed {STDIN_HANDOVER_MAX}")
        if self._stdin_buffer is None:
            self._stdin_buffer = ffi.new("char[]", _STDIN_BUFFER)
        ffi.memmove(self._stdin_buffer, buffered, len(buffered))
        rest_start, rest_len = ffi.new("size_t *"), ffi.new("size_t *")
        outcome = lib.fcgi_stdin_feed(self._handle, fd, request_id, self._stdin_buffer, _STDIN_BUFFER,
                                      len(buffered), int(self.limits.read_timeout * 1000), rest_start, rest_len)
        rest = ffi.buffer(self._stdin_buffer + rest_start[0], rest_len[0])[:]
        return outcome == 1, rest

    def check(self) -> None:
        """Raise what the upload refused (a limit: HTTPError 413; the input failed: RequestInputError)."""
        self._check(lib.upload_status(self._handle))

    def finish(self) -> None:
        """The body has ended; a body without its closing boundary is a 400."""
        self._check(lib.upload_finish(self._handle))

    @property
    def bytes_in(self) -> int:
        return lib.upload_bytes_in(self._handle)

    @property
    def fd_unread(self) -> int:
        """Of the last read_fd's length, the bytes it left unread (it stopped at a refusal)."""
        return lib.upload_fd_unread(self._handle)

    def results(self) -> tuple[MultiDict, MultiDict]:
        """(fields, files) of a completed body; the temporary files now belong to the caller."""
        handle = self._handle
        count = lib.upload_part_count(handle)
        memory = ffi.buffer(lib.upload_field_memory(handle), lib.upload_field_memory_size(handle))[:]
        if lib.upload_fields_have_nul(handle):
            fields = self._fields_by_index(memory, self._index(count))
        else:  # the usual case: "name NUL value NUL ...", split at C speed
            pieces = memory[:-1].decode("utf-8", "replace").split("\0") if memory else []
            fields = MultiDict.from_lists(pieces[0::2], pieces[1::2])
        files = MultiDict()
        if lib.upload_file_count(handle):
            for i in range(count):
                part = lib.upload_get_part(handle, i)
                if part.is_file:
                    files.add(*self._take_file(i, part))
        return fields, files

    def _index(self, count: int) -> list[int]:
        index = ffi.new("uint64_t[]", 5 * count)
        lib.upload_index(self._handle, index)
        return memoryview(ffi.buffer(index)).cast("Q").tolist()

    def _take_file(self, i: int, part) -> tuple[str, UploadedFile]:
        name = _text(part.name) or ""
        filename = _text(part.filename) or ""
        if part.filename_star != ffi.NULL:
            filename = _decode_ext_value(_text(part.filename_star)) or filename
        path = os.fsdecode(ffi.string(part.path)) if part.path != ffi.NULL else None
        uploaded = UploadedFile(name, filename, _text(part.content_type) or "application/octet-stream",
                                part.size, path)
        lib.upload_release_file(self._handle, i)  # the file is the UploadedFile's now
        return name, uploaded

    @staticmethod
    def _fields_by_index(memory: bytes, numbers: list[int]) -> MultiDict:
        rows = zip(numbers[0::5], numbers[1::5], numbers[2::5], numbers[3::5], numbers[4::5])
        return MultiDict((memory[name_at:name_at + name_len].decode("utf-8", "replace"),
                          memory[value_at:value_at + value_len].decode("utf-8", "replace"))
                         for is_file, name_at, name_len, value_at, value_len in rows if not is_file)

    def close(self) -> None:
        """Free the parser now; files not yet handed over by results() are removed."""
        handle, self._handle = self._handle, None
        if handle is not None:
            ffi.release(handle)


def parse_multipart(environ: dict, content_type: str, limits: Limits,
                    body: bytes | None = None) -> tuple[MultiDict, MultiDict]:
    """(fields, files) of a multipart body: from ``body`` if already read, else from ``wsgi.input``.

    A FastCGI input stream of this server feeds the parser itself (records, or the X_STDIN raw
    stream straight from the socket); any other WSGI input is read in chunks.
    """
    boundary = boundary_from_content_type(content_type)
    if boundary is None:
        raise HTTPError(400, "multipart body without a valid boundary in its Content-Type")
    upload = MultipartUpload(boundary, limits)
    try:
        if body is not None:
            upload.feed(body)
        else:
            stream = environ["wsgi.input"]
            feed_upload = getattr(stream, "feed_upload", None)
            if feed_upload is not None:
                feed_upload(upload)
            else:
                _feed_from_stream(upload, stream, environ.get("CONTENT_LENGTH", ""))
        upload.finish()
        return upload.results()
    finally:
        upload.close()


def _feed_from_stream(upload: MultipartUpload, stream, content_length: str) -> None:
    left = decimal(content_length)
    while left is None or left > 0:
        chunk = stream.read(_READ_CHUNK if left is None else min(left, _READ_CHUNK))
        if not chunk:
            if left:
                raise RequestInputError(f"request body ended {left} bytes short of its Content-Length")
            return
        if left is not None:
            left -= len(chunk)
        upload.feed(chunk)
