"""Limits on what a request may send, and where uploads are written."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Limits:
    """Every bound a request body is held to; exceeding one is a 413 (a malformed body is a 400)."""

    max_body: int = 4 * 1024 ** 3 - 1        #: whole request body, streamed (X_STDIN carries up to 4 GiB - 1)
    max_memory: int = 16 * 1024 ** 2         #: a body read into memory, or all form fields (names and values)
    max_file: int = 4 * 1024 ** 3 - 1        #: one uploaded file
    max_parts: int = 1000                    #: parts of one multipart body, fields of an urlencoded one
    max_part_header: int = 16 * 1024         #: header bytes of one part
    max_params: int = 1024 ** 2              #: FastCGI PARAMS of one request (the CGI variables)
    upload_dir: str = field(default_factory=tempfile.gettempdir)  #: where file parts are written
    #: an uploaded file past this size goes on past the page cache (O_DIRECT), written by a thread
    #: while the body is still read; 0: never (connector_c/direct_writer.h says why)
    upload_direct_io: int = 32 * 1024 ** 2
    read_timeout: float = 60.0               #: longest wait for the client's next bytes inside a request
    #: serve-http: beyond read_timeout, a client waited for must send a body or take an answer at
    #: this many bytes a second (Apache's mod_reqtimeout MinRate; pace.py); 0: no minimum
    min_rate: int = 500

    def body_too_large(self, length: int | None = None) -> str:
        """Why a body over max_body is refused (413): of ``length`` bytes when it was declared."""
        body = "request body" if length is None else f"request body of {length} bytes"
        return f"{body} exceeds the body size limit of {self.max_body} bytes"

    def check(self) -> None:
        """ValueError with a clear message for a limit that cannot work."""
        for name in ("max_body", "max_memory", "max_file", "max_parts", "max_part_header", "max_params"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.upload_direct_io < 0:
            raise ValueError("upload_direct_io cannot be negative (0 turns it off)")
        if self.max_part_header > 65536:
            raise ValueError("max_part_header cannot exceed 64 KiB")
        if self.min_rate < 0:
            raise ValueError("min_rate cannot be negative (0 turns it off)")
        if self.read_timeout <= 0:
            raise ValueError("read_timeout must be more than 0 seconds")
