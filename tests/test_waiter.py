"""The core on its own (fcgi_backend.waiter.Waiter): Net::Waiter's API, modes, hooks and TLS, in
programs that subclass it, with no FastCGI and no HTTP."""

import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from apache_harness import free_port
from conftest import REPO
from pki import make_pki

EXAMPLE = REPO / "examples" / "line_server.py"


def start(script: Path, *args, env=None) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, str(script), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
    return proc


def start_script(workdir: Path, text: str, *args) -> tuple[subprocess.Popen, int]:
    """Run a server program written here, on a free port (its first argument): (process, port)."""
    script = workdir / "server.py"
    script.write_text(text)
    port = free_port()
    return start(script, port, *args), port


def connect(port: int, timeout: float = 10) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=timeout)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def stop_server(proc) -> tuple[str, str]:
    """SIGTERM, then the server's stdout and stderr once it has exited (killed if it hangs)."""
    try:
        proc.send_signal(signal.SIGTERM)
        return proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_the_synopsis_example_serves_lines_and_exits_0():
    port = free_port()
    proc = start(EXAMPLE, port)
    try:
        with connect(port) as s:
            f = s.makefile("rwb")
            assert f.readline() == b"hello world\n"
            f.write(b"ping\n")
            f.flush()
            assert f.readline() == b"you said: ping\n"
            f.write(b"quit\n")
            f.flush()
            assert f.readline() == b""  # the server closed after "quit"
    finally:
        out, err = stop_server(proc)
    assert proc.returncode == 0
    assert "client connected from 127.0.0.1" in out and "waiter result: 0" in out


def test_a_port_in_use_is_result_100():
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        proc = start(EXAMPLE, taken.getsockname()[1])
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 100 and "waiter result: 100" in out and "cannot listen" in err


API_SCRIPT = '''
import os, signal, sys, time
from fcgi_backend import Waiter

def say(*words):
    # One write per line: the supervisor and its workers share this pipe, and a line written in
    # one piece (under PIPE_BUF) is never cut by another process's line.
    os.write(1, (" ".join(map(str, words)) + "\\n").encode())

class Probe(Waiter):
    def on_listen_ok(self):
        say("listen_ok", self.get_server_socket() is not None, self.is_child(), self.ssl_in_use())
    def on_fork_ok(self, pid):
        say("fork_ok", pid in self.get_kid_pids())
    def on_child_start(self):
        say("child_start", self.is_child(), self.get_server_socket() is None)
    def on_accept_ok(self, client):
        say("accept_ok", client is self.get_client_socket())
    def on_process(self, client):
        busy, total = self.get_busy_kids_count()
        client.sendall(f"busy {busy} of {total}\\n".encode())
        if client.recv(10) == b"stop":
            os.kill(os.getppid(), signal.SIGUSR2)
    def on_close(self, client):
        say("close")
    def on_child_exit(self):
        say("child_exit")
    def on_sig_usr2(self):
        say("sig_usr2 kids", len(self.get_kid_pids()))
        self.propagate_signal(signal.SIGUSR1)
    def on_child_sig_usr1(self):
        say("child_sig_usr1")
    def on_sig_child(self, pid):
        say("sig_child")
    def on_server_close(self):
        say("server_close")

server = Probe(port=int(sys.argv[1]), prefork=2, maxfork=2, timeout=0.2, prop_sigusr=False)
Probe.on_sig_usr1 = lambda self: self.break_main_loop()
sys.exit(server.run())
'''


def test_the_api_and_every_event_handler_in_prefork_mode(workdir):
    proc, port = start_script(workdir, API_SCRIPT)
    try:
        with connect(port) as s:
            assert s.makefile("rb").readline() == b"busy 1 of 2\n"
            s.sendall(b"stop")  # the worker asks the supervisor (USR2), which passes USR1 to the workers
        time.sleep(1)
        proc.send_signal(signal.SIGUSR1)  # the supervisor's on_sig_usr1 ends the main loop
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert lines[0] == "listen_ok True False False"
    assert lines.count("fork_ok True") == 2 and lines.count("child_start True True") == 2
    assert "accept_ok True" in lines and "close" in lines
    assert "sig_usr2 kids 2" in lines and lines.count("child_sig_usr1") == 2
    assert lines.count("child_exit") == 2 and lines.count("sig_child") == 2
    assert lines[-1] == "server_close"


FORKING_SCRIPT = '''
import sys, time
from fcgi_backend import Waiter

class OneAtATime(Waiter):
    def on_process(self, client):
        client.sendall(b"served by a process of its own\\n")
        time.sleep(float(client.recv(10) or 0))
    def on_maxforked(self, client):
        if client is not None:
            client.sendall(b"busy, try again later\\n")
    def on_forking_idle(self):
        print("forking_idle", flush=True)

sys.exit(OneAtATime(port=int(sys.argv[1]), prefork=0, maxfork=2, timeout=0.3).run())
'''


def test_forking_mode_forks_per_connection_and_turns_the_one_past_maxfork_away(workdir):
    proc, port = start_script(workdir, FORKING_SCRIPT)
    try:
        first, second = connect(port), connect(port)
        for s in (first, second):
            assert s.makefile("rb").readline() == b"served by a process of its own\n"
            s.sendall(b"2")  # each holds its process for 2 s
        third = connect(port)
        assert third.makefile("rb").readline() == b"busy, try again later\n"
        assert third.recv(1) == b""  # and closed
        for s in (first, second, third):
            s.close()
        time.sleep(2.5)  # both processes done: room again
        with connect(port) as fourth:
            assert fourth.makefile("rb").readline() == b"served by a process of its own\n"
            fourth.sendall(b"0")
    finally:
        out, err = stop_server(proc)
    assert proc.returncode == 0, err
    assert "forking_idle" in out
    assert "busy (maxfork): a connection is closed unserved" in err


RETIRING_SCRIPT = '''
import os, sys, time
from fcgi_backend import Waiter

port, exit_takes, graceful_timeout = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
then_crash = sys.argv[4:] == ["crash"]

class Retiring(Waiter):
    def on_process(self, client):
        client.sendall(b"one request, then this worker retires\\n")
        self.retire()
    def on_child_exit(self):
        os.write(1, b"child_exit begins\\n")
        time.sleep(exit_takes)  # e.g. a pool of database connections closing
        if then_crash:
            os.abort()  # e.g. a C extension crashing in its clean-up
        os.write(1, b"child_exit done\\n")

sys.exit(Retiring(port=port, prefork=1, maxfork=1, graceful_timeout=graceful_timeout).run())
'''


def served_by_a_retiring_worker(port: int) -> bool:
    with connect(port) as s:
        return s.makefile("rb").readline() == b"one request, then this worker retires\n"


def test_a_stop_while_a_retired_worker_cleans_up_lets_it_finish(workdir):
    """The server stops while a worker that retired itself (retire(), max_requests) is still in
    on_child_exit: the supervisor's SIGTERM must not cut that short nor be logged as a crash."""
    proc, port = start_script(workdir, RETIRING_SCRIPT, 1.5, 30)
    try:
        assert served_by_a_retiring_worker(port)
        assert proc.stdout.readline() == "child_exit begins\n"
    finally:
        out, err = stop_server(proc)
    assert proc.returncode == 0, err
    assert "child_exit done" in out
    assert "killed" not in err and "replacing" not in err, err


def test_a_worker_slow_to_leave_is_replaced_at_once_and_killed_after_graceful_timeout(workdir):
    """A worker that retired itself hangs in on_child_exit: the next client is served by its
    replacement without waiting, and the hung one is killed once graceful_timeout has passed."""
    proc, port = start_script(workdir, RETIRING_SCRIPT, 60, 2)
    try:
        assert served_by_a_retiring_worker(port)
        assert proc.stdout.readline() == "child_exit begins\n"
        started = time.monotonic()
        assert served_by_a_retiring_worker(port)
        assert time.monotonic() - started < 2
        time.sleep(3)  # past the first one's graceful_timeout
    finally:
        out, err = stop_server(proc)
    assert "is still in on_child_exit; killing it (graceful_timeout 2s)" in err, err
    assert "child_exit done" not in out
    assert re.search(r"killing 1 workers still busy after 2s; \d+: in on_child_exit", err), err  # named at the stop too
    assert err.count("cannot start a worker") == 1, err  # two stuck for a while: said once, not every 50 ms


@pytest.mark.parametrize("exit_takes", [0, 0.5])  # before and after the supervisor sees it leaving
def test_a_worker_that_crashes_after_it_retired_is_logged_as_such(workdir, exit_takes):
    proc, port = start_script(workdir, RETIRING_SCRIPT, exit_takes, 30, "crash")
    try:
        assert served_by_a_retiring_worker(port)
        assert proc.stdout.readline() == "child_exit begins\n"
        assert served_by_a_retiring_worker(port)  # its replacement
    finally:
        out, err = stop_server(proc)
    assert proc.returncode == 0, err
    assert len(re.findall(r"worker \d+ was killed by SIGABRT after it was retired", err)) == 2, err


TLS_SCRIPT = '''
import sys
from fcgi_backend import Waiter

class Secure(Waiter):
    def on_process(self, client):
        client.sendall(b"secret " + client.version().encode() + b"\\n")
    def on_ssl_error(self, error):
        print("ssl_error", error, flush=True)

port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
sys.exit(Secure(port=port, prefork=1, ssl=True, ssl_cert_file=cert, ssl_key_file=key).run())
'''


def test_tls_on_the_listener_and_a_failed_handshake_leaves_the_worker_alive(workdir):
    pki = make_pki(workdir / "pki")
    proc, port = start_script(workdir, TLS_SCRIPT, pki.cert("server"), pki.key("server"))
    context = ssl.create_default_context(cafile=str(pki.ca))
    try:
        with connect(port) as plain:
            plain.sendall(b"GET / HTTP/1.0\r\n\r\n")  # not TLS: the handshake fails
            plain.settimeout(5)
            try:
                assert plain.recv(100) == b""  # closed (a TLS alert may come first; a reset is as good)
            except ConnectionResetError:
                pass
        for _ in range(2):  # the same single worker goes on
            with context.wrap_socket(connect(port), server_hostname="localhost") as s:
                assert s.makefile("rb").readline().startswith(b"secret TLSv1.")
    finally:
        out, err = stop_server(proc)
    assert proc.returncode == 0, err
    assert "ssl_error" in out and "TLS handshake failed" in err


@pytest.mark.parametrize("kwargs, message", [
    ("prefork=2, bogus=1", "unknown Waiter options: bogus"),
    ("ssl_cert_file='x.pem'", "given without ssl=True"),
    ("ssl=True", "ssl=True needs ssl_cert_file"),
])
def test_bad_options_are_a_clear_error(kwargs, message):
    code = f"from fcgi_backend import Waiter\nWaiter(port=1, {kwargs})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode != 0 and message in out.stderr
