"""The systemd unit and the logrotate snippet in service/, run the way systemd and logrotate run them."""

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from apache_harness import free_port, running_as_root, user_exists, wait_for
from fcgi_client import FastCGIClient, cgi_params

SERVICE = Path(__file__).resolve().parent.parent / "service"
UNIT = SERVICE / "fcgi-backend@.service"
INSTALLED = Path(sys.executable).parent / "fcgi-backend"
needs_root_and_www_data = pytest.mark.skipif(not running_as_root() or not user_exists("www-data"),
                                             reason="needs root, and the user www-data (the unit's --user)")


def unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def instance_unit(site: Path) -> str:
    """The unit as this machine runs it: the command where this virtualenv put it."""
    return UNIT.read_text().replace("/usr/local/bin/fcgi-backend", str(INSTALLED))


def expand(command: str, site: Path, main_pid: int = 0) -> list[str]:
    """A unit's command line with systemd's specifiers filled in (%f: the instance as a path)."""
    return [word.replace("%f", str(site)).replace("$MAINPID", str(main_pid)) for word in shlex.split(command)]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verifies_the_unit(workdir):
    site = workdir / "var" / "www" / "example"
    name = "fcgi-backend@" + subprocess.run(["systemd-escape", "--path", str(site)], capture_output=True,
                                            text=True, check=True).stdout.strip() + ".service"
    unit = workdir / name
    unit.write_text(instance_unit(site))
    out = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [line for line in (out.stdout + out.stderr).splitlines() if name.split("@")[0] in line]
    assert out.returncode == 0 and problems == [], out.stdout + out.stderr


def test_the_unit_says_what_a_service_needs():
    settings = unit_settings(UNIT.read_text())
    assert settings["Type"] == ["notify"]
    assert settings["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert settings["Restart"] == ["on-failure"]
    assert "--user" in settings["ExecStart"][0]


@needs_root_and_www_data
def test_exec_start_and_exec_reload_as_systemd_runs_them(site, workdir):
    """ExecStart with NOTIFY_SOCKET set, as systemd starts a Type=notify service: READY=1 once the
    socket answers; ExecReload: RELOADING=1, then READY=1 with the new generation; SIGTERM: STOPPING=1."""
    settings = unit_settings(instance_unit(site))
    notify_path = workdir / "notify.sock"
    notifications = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notifications.bind(str(notify_path))
    os.chmod(notify_path, 0o777)  # as /run/systemd/notify is: the service may have become www-data
    notifications.settimeout(15)
    log = open(workdir / "service.log", "wb")
    proc = subprocess.Popen(expand(settings["ExecStart"][0], site), stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "NOTIFY_SOCKET": str(notify_path)})
    try:
        ready = notifications.recv(4096).decode()
        assert "READY=1" in ready and f"MAINPID={proc.pid}" in ready
        with FastCGIClient(site / "fcgi_backend.sock") as client:
            assert client.request(cgi_params("GET", "/api/time")).status == 200
        subprocess.run(expand(settings["ExecReload"][0], site, proc.pid), check=True)
        assert notifications.recv(4096).decode().startswith("RELOADING=1\nMONOTONIC_USEC=")
        assert "STATUS=reloaded: generation 2" in notifications.recv(4096).decode()
        proc.send_signal(signal.SIGTERM)  # systemctl stop
        assert notifications.recv(4096).decode() == "STOPPING=1"
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        notifications.close()
        log.close()
    text = (workdir / "service.log").read_text()
    assert "running as user www-data" in text and "reloaded" in text


@needs_root_and_www_data
def test_the_http_flavours_drop_in_from_the_units_comment_serves(site, workdir):
    """The ExecStart the unit's comment gives for serve-http, as systemd would run it."""
    command = re.search(r"^#\s+(ExecStart=\S+ serve-http .*)$", UNIT.read_text(), re.M).group(1)
    port = free_port()
    command = command.split("=", 1)[1].replace("/usr/local/bin/fcgi-backend", str(INSTALLED))
    notify_path = workdir / "notify.sock"
    notifications = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notifications.bind(str(notify_path))
    os.chmod(notify_path, 0o777)
    notifications.settimeout(15)
    proc = subprocess.Popen(expand(command.replace("127.0.0.1:8000", f"127.0.0.1:{port}"), site),
                            env={**os.environ, "NOTIFY_SOCKET": str(notify_path)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert "READY=1" in notifications.recv(4096).decode()
        assert requests.get(f"http://127.0.0.1:{port}/api/time", timeout=10).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        notifications.close()


def test_the_logrotate_snippet_signals_usr1_after_moving_the_files():
    text = (SERVICE / "fcgi-backend.logrotate").read_text()
    postrotate = re.search(r"postrotate\n(.*?)\n\s*endscript", text, re.S).group(1)
    assert "--signal=USR1" in postrotate and "fcgi-backend@*.service" in postrotate
    assert "sharedscripts" in text  # once per rotation, not once per file
    if shutil.which("logrotate"):
        config = text.replace("/var/log/fcgi-backend/*.log", "/nonexistent/fcgi-backend/*.log")
        out = subprocess.run(["logrotate", "--debug", "/dev/stdin"], input=config, capture_output=True,
                             text=True, timeout=30)
        assert out.returncode == 0 and "error" not in out.stderr.lower(), out.stderr


def test_usr1_reopens_the_log_file_after_it_was_moved(site, workdir):
    """What the logrotate snippet relies on."""
    log_file = workdir / "backend.log"
    proc = subprocess.Popen([sys.executable, "-m", "fcgi_backend", "run", str(site), "--log-file", str(log_file),
                             *(["--allow-root"] if running_as_root() else [])])
    try:
        wait_for(lambda: log_file.exists() and "supervisor" in log_file.read_text(), 15, "the backend's log")
        log_file.rename(workdir / "backend.log.1")
        proc.send_signal(signal.SIGUSR1)
        wait_for(log_file.exists, 10, "the reopened log file")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert "stopped after" in log_file.read_text()
        assert "stopped after" not in (workdir / "backend.log.1").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
