"""The fcgi-backend command: start-up, its socket, its exit codes and signals."""

import grp
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys

import pytest

from apache_harness import Backend, free_port, running_as_root, user_exists, wait_for
from conftest import backend_command, build_test_site
from fcgi_client import FastCGIClient, cgi_params


def fcgi_backend(*args, timeout=20):
    return subprocess.run(backend_command(*args), capture_output=True, text=True, timeout=timeout)


def test_help_describes_the_commands():
    out = fcgi_backend("--help")
    assert out.returncode == 0
    assert "run" in out.stdout and "check" in out.stdout and "fcgi_backend.sock" in out.stdout
    out = fcgi_backend("run", "--help")
    assert out.returncode == 0 and "--socket-mode" in out.stdout and "--tcp" in out.stdout


def test_run_makes_sqlite_dir_and_a_0660_socket_and_exits_0_on_sigterm(site, workdir):
    backend = Backend(site, workdir / "run", ["--socket-group", "0"] if not running_as_root() else []).start()
    sock = backend.socket_path
    assert sock.parent == site and sock.parent / "webroot" == site / "webroot"  # one level above the docroot
    mode = os.stat(sock).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660
    if running_as_root() and user_exists("www-data"):
        assert os.stat(sock).st_gid == grp.getgrnam("www-data").gr_gid
    assert (site / "SQLiteDBs").is_dir()
    with FastCGIClient(sock, timeout=10) as client:
        assert client.request(cgi_params("GET", "/")).status == 200
    assert backend.stop(signal.SIGTERM) == 0
    assert not sock.exists()
    log = backend.log_text()
    assert "serving" in log and "stopped after 1 request on " in log  # (and the readiness probe's connections)
    assert log.splitlines()[0][:4].isdigit()  # lines start with a timestamp


def test_sigint_also_stops_cleanly(backend):
    assert backend.stop(signal.SIGINT) == 0
    assert not backend.socket_path.exists()


def test_socket_mode_option(site, workdir):
    backend = Backend(site, workdir / "run", ["--socket-mode", "0600"]).start()
    assert stat.S_IMODE(os.stat(backend.socket_path).st_mode) == 0o600
    backend.stop()


def test_a_second_server_on_a_live_socket_exits_100(backend, site):
    out = fcgi_backend("run", site)
    assert out.returncode == 100
    assert "another server is already listening on" in out.stderr
    # the first server is untouched
    with FastCGIClient(backend.socket_path) as client:
        assert client.request(cgi_params("GET", "/api/time")).status == 200


def test_a_stale_socket_file_is_replaced(site, workdir):
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(site / "fcgi_backend.sock"))
    stale.close()  # the file stays, nobody listens
    backend = Backend(site, workdir / "run").start()
    backend.wait_for_log("replacing stale socket")
    backend.stop()


def test_a_file_that_is_not_a_socket_is_not_replaced(site):
    (site / "fcgi_backend.sock").write_text("precious")
    out = fcgi_backend("run", site)
    assert out.returncode == 100 and "is not a socket" in out.stderr
    assert (site / "fcgi_backend.sock").read_text() == "precious"


def test_a_socket_path_too_long_for_a_unix_socket_is_a_clear_error(workdir):
    """A site folder deep enough put the socket's path past 107 bytes: the log said "cannot create
    socket ...: None"."""
    deep = workdir / ("d" * 60) / ("e" * 50)
    deep.mkdir(parents=True)
    site = build_test_site(deep)
    out = fcgi_backend("run", site)
    assert out.returncode == 100
    assert f"the path is {len(str(site / 'fcgi_backend.sock'))} bytes" in out.stderr
    assert "at most 107; give a shorter one with --socket" in out.stderr and ": None" not in out.stderr


def test_tcp_address_in_use_exits_100(site):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        out = fcgi_backend("run", site, "--tcp", f"127.0.0.1:{taken.getsockname()[1]}")
    assert out.returncode == 100 and "cannot listen on" in out.stderr


def test_serves_on_tcp_when_asked(site, workdir):
    port = free_port()
    proc = subprocess.Popen(backend_command("run", site, "--tcp", f"127.0.0.1:{port}"),
                            stderr=subprocess.PIPE, text=True)
    try:
        def answers():
            try:
                with FastCGIClient(("127.0.0.1", port)) as client:
                    return client.request(cgi_params("GET", "/hello/tcp")).status == 200
            except OSError:
                return False
        wait_for(answers, 15, "the backend on TCP", proc)
        assert not (site / "fcgi_backend.sock").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


def test_a_handler_module_that_fails_to_import_stops_startup_naming_it(site):
    (site / "handlers" / "broken.py").write_text("import os\n\nvalue = undefined_name + 1\n")
    out = fcgi_backend("run", site)
    assert out.returncode == 1
    assert "handler module 'broken' failed in import at broken.py line 3" in out.stderr
    assert "NameError" in out.stderr
    assert not (site / "fcgi_backend.sock").exists()


def test_a_syntax_error_names_the_file_and_line(site):
    (site / "handlers" / "typo.py").write_text("def init_module(registry):\n    return (\n")
    out = fcgi_backend("run", site)
    assert out.returncode == 1 and "'typo'" in out.stderr and "SyntaxError" in out.stderr


def test_an_init_module_that_raises_stops_startup(site):
    (site / "handlers" / "zz_dup.py").write_text("def init_module(registry):\n    registry.handler('home', print)\n")
    out = fcgi_backend("run", site)
    assert out.returncode == 1
    assert "handler module 'zz_dup' failed in init_module" in out.stderr and "already registered" in out.stderr


def test_helper_modules_are_shared_with_relative_imports(site):
    (site / "handlers" / "_shared.py").write_text("GREETING = 'hi from a helper'\n")
    (site / "handlers" / "user.py").write_text(
        "from ._shared import GREETING\n\ndef init_module(registry):\n"
        "    registry.route('/greet', lambda request: {'greeting': GREETING})\n")
    out = fcgi_backend("check", site)
    assert "route:    /greet" in out.stdout and "_shared" not in out.stdout, out.stdout + out.stderr


def test_a_site_without_webroot_is_a_clear_error(workdir):
    (workdir / "empty").mkdir()
    out = fcgi_backend("run", workdir / "empty")
    assert out.returncode == 2 and "has no webroot/" in out.stderr
    out = fcgi_backend("run", workdir / "missing")
    assert out.returncode == 2 and "does not exist" in out.stderr


@pytest.mark.parametrize("args, message", [
    (["--socket-mode", "99x"], "not an octal mode"),
    (["--tcp", "nohost"], "HOST:PORT"),
    (["--max-body", "lots"], "not a size"),
    (["--socket", "/x", "--tcp", "127.0.0.1:1"], "socket and tcp: give one"),
])
def test_bad_options_are_refused_with_a_message(site, args, message):
    out = fcgi_backend("run", site, *args)
    assert out.returncode == 2 and message in out.stderr


def test_check_lists_handlers_and_routes_and_the_test_sites_two_planted_problems(site):
    out = fcgi_backend("check", site)
    assert out.returncode == 1
    assert "handlers: account (csrf), boom, guestbook (csrf), home" in out.stdout
    problems = [line for line in out.stdout.splitlines() if line.startswith("problem:")]
    assert problems == [
        "problem:  webroot/orphan.mustache:1:1: names handler 'nobody_registered_this', which no handler module "
        "registered",
        "problem:  route /page-with-missing-template: template 'no-such.mustache' has no file in the webroot"]
    assert "route:    /hello/<name> -> hello with views/hello.mustache [GET, HEAD]" in out.stdout


# ---- other users ------------------------------------------------------------------------------

RUN_AS = os.path.join(os.path.dirname(__file__), "run_as.py")
needs_root_and_www_data = pytest.mark.skipif(not running_as_root() or not user_exists("www-data"),
                                             reason="needs root, and the user www-data")


def fcgi_backend_as(user, *args, timeout=20):
    return subprocess.run([sys.executable, RUN_AS, user, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


@needs_root_and_www_data
def test_another_users_live_socket_is_never_taken_over(site, workdir):
    """A socket www-data may not connect to (root's, mode 0660) is not stale: connecting fails with
    EACCES, and a backend run as www-data used to unlink it and listen in its place."""
    shared = workdir / "shared"
    shared.mkdir()
    os.chown(shared, pwd.getpwnam("www-data").pw_uid, -1)  # www-data could unlink what is in it
    socket_path = shared / "app.sock"
    root_backend = Backend(site, workdir / "run", ["--socket", socket_path, "--socket-group", "root"]).start()
    try:
        other_site = build_test_site(workdir / "other")
        shutil.chown(other_site / "SQLiteDBs" if (other_site / "SQLiteDBs").exists() else other_site, "www-data")
        out = fcgi_backend_as("www-data", "run", other_site, "--socket", socket_path)
        assert out.returncode == 100, out.stderr
        assert f"{socket_path} belongs to root" in out.stderr and "Traceback" not in out.stderr
        with FastCGIClient(socket_path) as client:  # root's server still answers on its socket
            assert client.request(cgi_params("GET", "/api/time")).status == 200
    finally:
        root_backend.stop()


@needs_root_and_www_data
def test_a_site_folder_the_user_cannot_write_is_a_clear_error_exit_2(site):
    out = fcgi_backend_as("www-data", "run", site)
    assert out.returncode == 2, out.stderr
    assert f"cannot create {site}/SQLiteDBs as user www-data: Permission denied" in out.stderr
    assert "Traceback" not in out.stderr
