"""Separate hosts on one machine, for tests: each host is a Linux network namespace with its own
address on a bridge that the test makes, reachable from the machine (the "web server host")
only through that bridge.

    with Hosts(3) as hosts:            # 10.77.N.11, .12, .13; the machine is 10.77.N.1 (and .2)
        hosts.run(0, ["fcgi-backend", "run", ...])   # a process on the first host
        hosts.cut(0); hosts.restore(0)               # its link down, and up again

Every name carries the creating process's pid, so runs side by side do not meet, and ``close()``
removes everything it made. ``Hosts.unavailable()`` says why namespaces cannot be made here.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from apache_harness import APACHE_USER, running_as_root, wait_for

PORT = 9000  # each member's FastCGI port


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


class Hosts:
    def __init__(self, count: int) -> None:
        tag = os.getpid() % 50000
        self.subnet = f"10.77.{tag % 250}"
        self.gateway = f"{self.subnet}.1"
        self.outsider = f"{self.subnet}.2"  # a second address of the machine's: a peer that is not the web server
        self.bridge = f"fbr{tag}"
        self.names = [f"fcgi-{tag}-{i}" for i in range(count)]
        self.addresses = [f"{self.subnet}.{11 + i}" for i in range(count)]
        self._veths = [f"fv{tag}x{i}" for i in range(count)]

    @staticmethod
    def unavailable() -> str:
        """Why namespaces cannot be made here ("" if they can)."""
        if os.geteuid() != 0:
            return "network namespaces need root"
        probe = f"fcgi-probe-{os.getpid()}"
        out = _ip("netns", "add", probe, check=False)
        if out.returncode != 0:
            return f"ip netns add failed: {out.stderr.strip()}"
        _ip("netns", "del", probe, check=False)
        return ""

    def __enter__(self) -> "Hosts":
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _ip("addr", "add", f"{self.outsider}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for name, veth, address in zip(self.names, self._veths, self.addresses):
                _ip("netns", "add", name)
                _ip("link", "add", veth, "type", "veth", "peer", "name", veth + "p")
                _ip("link", "set", veth, "master", self.bridge, "up")
                _ip("link", "set", veth + "p", "netns", name)
                self.ip(name, "link", "set", "lo", "up")
                self.ip(name, "link", "set", veth + "p", "name", "eth0")
                self.ip(name, "addr", "add", f"{address}/24", "dev", "eth0")
                self.ip(name, "link", "set", "eth0", "up")
                self.ip(name, "route", "add", "default", "via", self.gateway)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def ip(self, name: str, *args: str) -> None:
        _ip("netns", "exec", name, "ip", *args)

    def command(self, index: int, argv: list[str]) -> list[str]:
        """``argv`` as run on host ``index``."""
        return ["ip", "netns", "exec", self.names[index], *argv]

    def kill_all(self, index: int) -> None:
        """SIGKILL every process on host ``index``: the host is lost, with whatever it had in flight."""
        pids = _ip("netns", "pids", self.names[index], check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), 9)
            except ProcessLookupError:
                pass

    def cut(self, index: int) -> None:
        """Host ``index``'s link goes down: its packets go nowhere, as when a cable is pulled."""
        _ip("link", "set", self._veths[index], "down")

    def restore(self, index: int) -> None:
        _ip("link", "set", self._veths[index], "up")

    def close(self) -> None:
        for name, veth in zip(self.names, self._veths):
            _ip("link", "del", veth, check=False)
            _ip("netns", "del", name, check=False)
        _ip("link", "del", self.bridge, check=False)


class Member:
    """``fcgi-backend run SITE --tcp ADDR:9000`` on one host, the machine's address its only allowed
    client; FCGI_TEST_MEMBER in its environment names it (m0, m1, ...)."""

    def __init__(self, hosts: Hosts, index: int, site: Path, root: Path, args: list[str] = ()) -> None:
        self.hosts, self.index, self.site, self.root = hosts, index, site, root
        self.address = hosts.addresses[index]
        self.name = f"m{index}"
        self.args = list(args)
        self.log_file = root / f"{self.name}.log"
        self.proc = None

    def start(self) -> "Member":
        uploads = self.root / f"{self.name}-uploads"
        uploads.mkdir(exist_ok=True)
        user = ["--user", APACHE_USER] if running_as_root() else []
        argv = [sys.executable, "-m", "fcgi_backend", "run", str(self.site), "--tcp", f"{self.address}:{PORT}",
                "--allowed-clients", self.hosts.gateway, "--ping-path", "/fcgi-ping", "--prefork", "2",
                "--upload-dir", str(uploads), *user, *self.args]
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(self.hosts.command(self.index, argv), stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, "FCGI_TEST_MEMBER": self.name})
        wait_for(self.answers, 20, f"member {self.name}", self.proc, self.log_file)
        return self

    def answers(self) -> bool:
        try:
            with socket.create_connection((self.address, PORT), timeout=1) as s:
                s.sendall(b"GET /fcgi-ping HTTP/1.0\r\n\r\n")
                return s.recv(100).startswith(b"HTTP/1.0 200")
        except OSError:
            return False

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
