"""`make demo`'s program: the example site behind Apache, its URL printed, stopped by a signal."""

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from apache_harness import free_port

REPO = Path(__file__).resolve().parent.parent


def test_the_demo_prints_its_url_and_serves_the_example_site():
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(REPO / "tools" / "demo.py")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={"DEMO_PORT": str(port), "PATH": "/usr/bin:/bin"})
    try:
        deadline = time.monotonic() + 30
        url = None
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "the demo exited before printing its URL"
            found = re.search(r"The example site is up at (http://\S+)/ ", line)
            url = found and found.group(1)
        assert url == f"http://127.0.0.1:{port}"
        page = requests.get(url + "/?name=Demo", timeout=10)
        assert page.status_code == 200 and "Welcome, Demo" in page.text
        assert requests.get(url + "/fcgi-status", timeout=10).json()["prefork"] == 2  # its config file
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
