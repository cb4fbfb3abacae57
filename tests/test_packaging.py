"""The sdist and the wheel, each installed into a fresh virtualenv outside the checkout, serve a
page behind Apache with the vhost `fcgi-backend apache-conf` writes; the wheel carries the vhost
templates, the connector's C source (which builds with apxs) and the service files."""

import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import requests

from apache_harness import Apache, free_port, make_reachable_dir, running_as_root, wait_for

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_SITE = REPO / "examples" / "site"


@pytest.fixture(scope="module")
def dist():
    """sdist and wheel, built as `python -m build` builds them for PyPI."""
    out = make_reachable_dir("fcgi-dist-")
    subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(REPO)], check=True,
                   capture_output=True, timeout=600)
    yield {"sdist": next(out.glob("*.tar.gz")), "wheel": next(out.glob("*.whl"))}
    shutil.rmtree(out, ignore_errors=True)


def fresh_install(artifact: Path, where: Path) -> Path:
    """A new virtualenv with only ``artifact`` (and what it requires) installed; its bin folder."""
    venv.create(where, with_pip=True)
    out = subprocess.run([str(where / "bin" / "pip"), "install", "-q", str(artifact)], capture_output=True,
                         text=True, timeout=600, cwd=where)
    assert out.returncode == 0, out.stdout + out.stderr
    return where / "bin"


@pytest.mark.parametrize("kind", ["sdist", "wheel"])
def test_installed_from_each_artifact_it_serves_a_page_behind_apache(dist, kind):
    root = make_reachable_dir(f"fcgi-pkg-{kind}-")
    try:
        bin_dir = fresh_install(dist[kind], root / "venv")
        site = root / "site"
        shutil.copytree(EXAMPLE_SITE, site, ignore=shutil.ignore_patterns("SQLiteDBs", "*.sock"))
        command = [str(bin_dir / "fcgi-backend")]
        assert subprocess.run([*command, "--version"], capture_output=True, text=True, cwd=root).returncode == 0
        port = free_port()
        vhost = subprocess.run([*command, "apache-conf", str(site), "--port", str(port), "--listen"],
                               capture_output=True, text=True, check=True, cwd=root).stdout
        (root / "vhost.conf").write_text(vhost)
        log = open(root / "backend.log", "wb")
        user = ["--user", "www-data"] if running_as_root() else []
        backend = subprocess.Popen([*command, "run", str(site), *user], stdout=log, stderr=subprocess.STDOUT,
                                   cwd=root)  # not the checkout: nothing of it on sys.path
        apache = None
        try:
            wait_for(lambda: (site / "fcgi_backend.sock").exists(), 20, "the installed backend", backend,
                     root / "backend.log")
            apache = Apache(site, root / "apache", vhost_conf=root / "vhost.conf").start()
            page = requests.get(f"http://127.0.0.1:{port}/?name=Installed", timeout=10)
            assert page.status_code == 200 and "Welcome, Installed" in page.text
            assert requests.get(f"http://127.0.0.1:{port}/style.css", timeout=10).status_code == 200
        finally:
            if apache is not None:
                apache.stop()
            backend.terminate()
            code = backend.wait(20)
            log.close()
        assert code == 0, (root / "backend.log").read_text()[-3000:]
        installed = subprocess.run([str(bin_dir / "python"), "-c", "import fcgi_backend, os; "
                                    "print(os.path.dirname(fcgi_backend.__file__))"],
                                   capture_output=True, text=True, check=True, cwd=root).stdout.strip()
        assert not installed.startswith(str(REPO))
        package = Path(installed)
        for shipped in ("apache_conf/fcgi_backend.conf", "apache_conf/fcgi_backend_connector.conf",
                        "connector_c/mod_fcgi_backend.c", "service/fcgi-backend@.service",
                        "service/fcgi-backend.logrotate"):
            assert (package / shipped).is_file(), shipped
        if kind == "wheel" and shutil.which("apxs"):  # the README's way to build the connector from it
            build = root / "connector"
            shutil.copytree(package / "connector_c", build)
            out = subprocess.run(["apxs", "-c", "mod_fcgi_backend.c", "fcgi_wire.c"], cwd=build,
                                 capture_output=True, text=True, timeout=120)
            assert out.returncode == 0 and (build / ".libs" / "mod_fcgi_backend.so").exists(), out.stderr
    finally:
        shutil.rmtree(root, ignore_errors=True)
