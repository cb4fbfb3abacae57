"""A Docker engine and base images for the docker-compose stack's tests, on a machine that may have
neither a running engine nor a reachable image registry.

``Engine.start()`` uses a running engine (``DOCKER_HOST``, or /var/run/docker.sock) when one
answers; else it starts Debian's ``dockerd`` with its state in a temporary folder, published ports
on 127.0.0.1 only, and stops it and removes that folder at ``stop()``. ``base_images(engine)``
makes ``fcgi-backend-base/debian:bookworm`` with mmdebstrap (``--variant=minbase``, imported), and
on top of it ``fcgi-backend-base/python:bookworm`` and ``fcgi-backend-base/postgres:bookworm``
(docker/base/), unless the engine has them already. ``python3 tools/docker_engine.py`` does both and prints the environment.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEBIAN_IMAGE = "fcgi-backend-base/debian:bookworm"
PYTHON_IMAGE = "fcgi-backend-base/python:bookworm"
POSTGRES_IMAGE = "fcgi-backend-base/postgres:bookworm"
SYSTEM_SOCKET = "/var/run/docker.sock"


class EngineUnavailable(RuntimeError):
    """No engine answers and none can be started here (the reason is the message)."""


class Engine:
    def __init__(self) -> None:
        self.env = dict(os.environ)
        self.proc: subprocess.Popen | None = None
        self.state: Path | None = None

    def docker(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(["docker", *args], env=self.env, capture_output=True, text=True, **kwargs)

    def answers(self) -> bool:
        try:
            return self.docker("info", timeout=20).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def start(self) -> "Engine":
        if shutil.which("docker") is None:
            raise EngineUnavailable("the docker client is not installed (Debian: docker.io)")
        if "DOCKER_HOST" not in self.env and os.path.exists(SYSTEM_SOCKET):
            self.env["DOCKER_HOST"] = f"unix://{SYSTEM_SOCKET}"
        if "DOCKER_HOST" in self.env and self.answers():
            return self
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            raise EngineUnavailable("no engine runs and dockerd is not installed (Debian: docker.io)")
        if os.geteuid() != 0:
            raise EngineUnavailable("no engine runs, and starting dockerd needs root")
        self.state = Path(tempfile.mkdtemp(prefix="fcgi-dockerd-"))
        sock = self.state / "docker.sock"
        self.env["DOCKER_HOST"] = f"unix://{sock}"
        log = open(self.state / "dockerd.log", "wb")
        self.proc = subprocess.Popen(
            [dockerd, "--storage-driver=overlay2", "--ip=127.0.0.1", f"--data-root={self.state / 'data'}",
             f"--exec-root={self.state / 'exec'}", f"--pidfile={self.state / 'dockerd.pid'}", f"--host=unix://{sock}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if sock.exists() and self.answers():
                return self
            time.sleep(0.5)
        reason = (self.state / "dockerd.log").read_text(errors="replace")[-2000:]
        self.stop()
        raise EngineUnavailable(f"dockerd did not start:\n{reason}")

    def stop(self) -> None:
        """Stop the engine this started (a running one is left alone), and remove its state."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(60)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None
        if self.state is not None:
            subprocess.run(["umount", "-R", "-l", str(self.state)], capture_output=True)  # overlay mounts left
            shutil.rmtree(self.state, ignore_errors=True)
            self.state = None

    def has_image(self, name: str) -> bool:
        return self.docker("image", "inspect", name, timeout=30).returncode == 0


def base_images(engine: Engine) -> dict[str, str]:
    """The build args that point docker/Dockerfile at the local base images, made if missing."""
    if not engine.has_image(DEBIAN_IMAGE):
        if shutil.which("mmdebstrap") is None:
            raise EngineUnavailable("no registry image can be pulled here and mmdebstrap is not installed")
        debootstrap = subprocess.Popen(["mmdebstrap", "--variant=minbase", "--include=ca-certificates", "bookworm", "-"],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        imported = subprocess.run(["docker", "import", "-", DEBIAN_IMAGE], stdin=debootstrap.stdout, env=engine.env,
                                  capture_output=True, text=True, timeout=900)
        debootstrap.stdout.close()
        errors = debootstrap.stderr.read().decode(errors="replace")
        if debootstrap.wait() != 0 or imported.returncode != 0:
            raise RuntimeError(f"making {DEBIAN_IMAGE} failed:\n{errors[-2000:]}{imported.stderr[-2000:]}")
    for image, dockerfile in ((PYTHON_IMAGE, "python.Dockerfile"), (POSTGRES_IMAGE, "postgres.Dockerfile")):
        if not engine.has_image(image):
            out = engine.docker("build", "-t", image, "--build-arg", f"DEBIAN_IMAGE={DEBIAN_IMAGE}",
                                "-f", str(REPO / "docker" / "base" / dockerfile), str(REPO / "docker" / "base"),
                                timeout=900)
            if out.returncode != 0:
                raise RuntimeError(f"building {image} failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    return {"DEBIAN_IMAGE": DEBIAN_IMAGE, "PYTHON_IMAGE": PYTHON_IMAGE, "POSTGRES_IMAGE": POSTGRES_IMAGE,
            "EXTRA_CA_CERTS": extra_ca_certs()}


def extra_ca_certs() -> str:
    """The CA certificates this machine's administrator added (Debian keeps them here): what a
    network that intercepts TLS needs trusted inside the images too."""
    folder = Path("/usr/local/share/ca-certificates")
    return "".join(p.read_text() for p in sorted(folder.rglob("*.crt"))) if folder.is_dir() else ""


if __name__ == "__main__":
    engine = Engine().start()
    args = base_images(engine)
    print(f"DOCKER_HOST={engine.env['DOCKER_HOST']}")
    print(f"DEBIAN_IMAGE={args['DEBIAN_IMAGE']}\nPYTHON_IMAGE={args['PYTHON_IMAGE']}\nPOSTGRES_IMAGE={args['POSTGRES_IMAGE']}")
    if engine.proc is not None:
        print("(started here; stop it with Ctrl-C)", file=sys.stderr)
        try:
            engine.proc.wait()
        except KeyboardInterrupt:
            engine.stop()
