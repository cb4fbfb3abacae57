"""`make demo`: the example site behind a real Apache on loopback, until Ctrl-C.

Serves examples/site in place (edit its templates and reload the page), unless Apache's
unprivileged user cannot reach this checkout, in which case a copy under /tmp is served.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from apache_harness import (REPO, Apache, Backend, apache_can_reach, free_port, make_reachable_dir,  # noqa: E402
                            running_as_root, user_exists)

EXAMPLE = REPO / "examples" / "site"


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def choose_site() -> tuple[Path, Path]:
    """(site folder, run folder for logs and Apache's config)."""
    if apache_can_reach(EXAMPLE):
        return EXAMPLE, REPO / ".run" / "demo"
    base = make_reachable_dir("fcgi-backend-demo-")
    site = base / "site"
    shutil.copytree(EXAMPLE, site, ignore=shutil.ignore_patterns("SQLiteDBs", "*.sock"))
    print(f"(Apache's user cannot enter {REPO}; serving a copy at {site})")
    return site, base / "run"


def main() -> int:
    site, run_dir = choose_site()
    port = int(os.environ.get("DEMO_PORT", 0)) or (8080 if port_is_free(8080) else free_port())
    # as root, the way a deployment runs: the workers as Apache's user, www-data
    user = ["--user", "www-data"] if running_as_root() and user_exists("www-data") else []
    backend = Backend(site, run_dir, ["--config", str(REPO / "examples" / "fcgi_backend.toml"), "--access-log", *user],
                      log_to_terminal=True).start()
    apache = None
    try:
        apache = Apache(site, run_dir, port=port).start()
        print(f"\nThe example site is up at {apache.url}/  (socket {backend.socket_path})")
        print(f"Pool status: {apache.url}/fcgi-status  (OpenMetrics: {apache.url}/fcgi-status?openmetrics)")
        print(f"Apache logs: {run_dir}/apache_*.log. Press Ctrl-C to stop.\n", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while backend.proc.poll() is None and apache.proc.poll() is None:
            time.sleep(0.5)
        print("a server exited; stopping", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping")
        return 0
    finally:
        if apache:
            apache.stop()
        backend.stop()


if __name__ == "__main__":
    sys.exit(main())
