"""A real PostgreSQL server for the tests and benchmarks, in a folder of its own.

Debian's ``postgresql`` package supplies the programs; the cluster is made with ``initdb`` in a
temporary folder, as the unprivileged ``postgres`` user when we are root (PostgreSQL refuses to
run as root), and listens on a unix socket in that folder (and on TCP addresses, when asked).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from pathlib import Path

BINDIRS = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))


def available() -> bool:
    return bool(BINDIRS) and os.path.exists(os.path.join(BINDIRS[-1], "initdb"))


class Postgres:
    """``Postgres(folder).start()``; ``url`` names its database ``fcgi``; ``stop()`` ends it (and
    ``start()`` again brings the same cluster back)."""

    def __init__(self, folder: Path, listen: str = "") -> None:
        self.folder = Path(folder)
        self.listen = listen  # TCP addresses ("" = unix socket only)
        self.bindir = BINDIRS[-1] if BINDIRS else ""
        self.data = self.folder / "data"
        self.sockets = self.folder / "sockets"
        self.user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@/fcgi?host={self.sockets}"

    def tcp_url(self, host: str, port: int = 5432) -> str:
        return f"postgresql://{self.user}@{host}:{port}/fcgi"

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        command = [os.path.join(self.bindir, args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", self.user, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=True, cwd="/")

    def start(self) -> "Postgres":
        self.folder.mkdir(parents=True, exist_ok=True)
        self.sockets.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            for path in (self.folder, self.sockets):
                shutil.chown(path, self.user)
            self.folder.chmod(0o755)
            self.sockets.chmod(0o777)  # the backend's workers connect, whatever user they run as
        first = not self.data.exists()  # start() after stop() starts the same cluster again
        if first:
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", self.user, "--no-sync", "-E", "UTF8")
        options = (f"-k {self.sockets} -c listen_addresses='{self.listen}' -c fsync=off -c synchronous_commit=off "
                   f"-c full_page_writes=off -c max_connections=200")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.folder / "server.log"), "-w", "start")
        if not first:
            return self
        if self.listen:
            with open(self.data / "pg_hba.conf", "a") as hba:
                hba.write("host all all 0.0.0.0/0 trust\n")
            self._run("pg_ctl", "-D", str(self.data), "reload")
        self._run("createdb", "-h", str(self.sockets), "-U", self.user, "fcgi")
        return self

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
