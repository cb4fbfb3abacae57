"""``wsgi.file_wrapper`` (PEP 3333), in both flavours: a file an application returns, as Flask's
``send_file`` and Django's ``FileResponse`` hand one over, an ``io.BytesIO`` of a generated
download as often as a file on disk. The HTTP flavour sends a regular file's bytes with
sendfile, from where the application's reads left it; anything else, and every file in the
FastCGI flavour (its records frame the bytes), is read in blocks as an iterable.
"""

from __future__ import annotations

import io
import os
import stat

from .records import ANSWER_RECORD_MAX


# At the least, a read of a file on disk or in memory: four whole STDOUT records in the FastCGI
# flavour (64 KiB made a full record and one of 8 bytes).
STORED_READ_SIZE = 4 * ANSWER_RECORD_MAX


class FileWrapper:
    """The application's file, read in ``block_size`` blocks, or blocks of STORED_READ_SIZE when
    its bytes are all there already (a file on disk, an io.BytesIO): Django asks for 4 KiB and
    Werkzeug for 8, and each block was a record and a write to the web server. Closed with the
    answer."""

    def __init__(self, filelike, block_size: int = 64 * 1024) -> None:
        self.filelike = filelike
        self.block_size = block_size

    def __iter__(self):
        # (looked at here, not when made: serve-http sends a regular file with sendfile, unread)
        stored = isinstance(self.filelike, io.BytesIO) or regular_file_span(self.filelike) is not None
        read_size = max(self.block_size, STORED_READ_SIZE) if stored else self.block_size  # (a pipe's as asked)
        while block := self.filelike.read(read_size):
            yield block

    def close(self) -> None:
        if hasattr(self.filelike, "close"):
            self.filelike.close()


def regular_file_span(filelike) -> tuple[int, int, int] | None:
    """(file descriptor, offset, bytes from there to its end) when ``filelike`` is a regular file
    that sendfile can take; None for anything else: an io.BytesIO (whose fileno() raises), a pipe,
    a closed file."""
    try:
        fd = filelike.fileno()
        status = os.fstat(fd)
    except (AttributeError, OSError, ValueError):
        return None
    if not stat.S_ISREG(status.st_mode):
        return None
    try:
        offset = filelike.tell()  # (a buffered file has read ahead of it: the descriptor's offset is further on)
    except (AttributeError, OSError, ValueError):
        offset = os.lseek(fd, 0, os.SEEK_CUR)
    return fd, offset, max(0, status.st_size - offset)
