"""Start a real Apache httpd and a real backend on loopback, for the tests, the demo and the benchmarks.

Apache runs from a main config written here (modules, the listen port, logs in a run folder) that
includes the project's own ``apache_conf/fcgi_backend.conf`` unchanged, with FCGI_SITE and FCGI_PORT
defined before it. The main config holds what Debian's apache2.conf says of the file system's root
(ROOT_DIRECTORY), so the vhost is checked, and measured, as it runs there.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VHOST_CONF = REPO / "apache_conf" / "fcgi_backend.conf"
CONNECTOR_CONF = REPO / "apache_conf" / "fcgi_backend_connector.conf"
CONNECTOR_SO = REPO / "build" / "connector" / ".libs" / "mod_fcgi_backend.so"
APACHE_BIN = shutil.which("apache2", path="/usr/sbin:/usr/bin:" + os.environ.get("PATH", "")) or "/usr/sbin/apache2"
MODULE_DIR = Path("/usr/lib/apache2/modules")
MODULES = ["mpm_event", "authz_core", "mime", "dir", "env", "rewrite", "proxy", "proxy_fcgi"]
APACHE_USER = "www-data"
DEBIAN_MODS = Path("/etc/apache2/mods-available")


def debian_modules(*names: str) -> str:
    """Config lines that load modules as Debian's a2enmod enables them: each one's .load and its
    settings (.conf) from mods-available, e.g. ("filter", "deflate") for the text types Debian
    compresses by default. For extra_config; the harness loads only MODULES otherwise."""
    parts = []
    for name in names:
        for suffix in (".load", ".conf"):
            if (DEBIAN_MODS / (name + suffix)).exists():
                parts.append((DEBIAN_MODS / (name + suffix)).read_text())
    return "\n".join(parts) + "\n"
# Debian's apache2.conf (and Red Hat's httpd.conf) on the file system's root: nothing served unless a
# vhost grants it, and no .htaccess looked for. Without it Apache opens a .htaccess in every parent
# of the webroot on every request: about 10 µs of its CPU per request here, behind any backend.
ROOT_DIRECTORY = """<Directory />
    Options FollowSymLinks
    AllowOverride None
    Require all denied
</Directory>
"""
INSTALLED_COMMAND = Path(sys.executable).parent / "fcgi-backend"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def running_as_root() -> bool:
    return os.geteuid() == 0


def apache_can_reach(path: Path) -> bool:
    """Can Apache's unprivileged children traverse every folder down to ``path``?"""
    if not running_as_root():
        return True  # Apache keeps our own user when not started as root
    for folder in [path, *path.parents]:
        if not folder.stat().st_mode & stat.S_IXOTH:
            return False
    return True


def make_reachable_dir(prefix: str) -> Path:
    """A new folder under /tmp that Apache's children can enter."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None,
             log_file: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.05)
    detail = log_file.read_text(errors="replace")[-3000:] if log_file and log_file.exists() else ""
    state = f" (exited with {proc.returncode})" if proc is not None and proc.poll() is not None else ""
    raise RuntimeError(f"{what} did not come up{state}\n{detail}")


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _unix_socket_open(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


class WebServer:
    """A web server process serving ``site`` on 127.0.0.1:port from a config written to ``run_dir``.

    A subclass says what config to write (:meth:`config_text`) and how to run and check it.
    """

    name = "web server"

    def __init__(self, site: Path, run_dir: Path, port: int | None = None, extra_config: str = "") -> None:
        self.site = Path(site)
        self.run_dir = Path(run_dir)
        self.port = port or free_port()
        self.extra_config = extra_config
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def error_log(self) -> Path:
        return self.run_dir / f"{self.name}_error.log"

    def config_text(self) -> str:
        raise NotImplementedError

    def command(self, conf: Path) -> list[str]:
        raise NotImplementedError

    def check_command(self, conf: Path) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Anything the server needs before its config is checked."""

    def start(self) -> "WebServer":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.prepare()
        conf = self.run_dir / f"{self.name}.conf"
        conf.write_text(self.config_text())
        check = subprocess.run(self.check_command(conf), capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"{self.name} rejects the config:\n{check.stdout}{check.stderr}")
        self.proc = subprocess.Popen(self.command(conf), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_for(lambda: _port_open(self.port), 15, self.name, self.proc, self.error_log)
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # a graceful stop of the whole process group
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Apache(WebServer):
    """An Apache httpd serving ``site`` through ``vhost_conf`` on 127.0.0.1:port."""

    name = "apache"

    def __init__(self, site: Path, run_dir: Path, port: int | None = None,
                 vhost_conf: Path = VHOST_CONF, extra_config: str = "", connector: bool = False,
                 tls: tuple[Path, Path] | None = None) -> None:
        """``connector``: use apache_conf/fcgi_backend_connector.conf with the module from build/.
        ``tls``: (certificate, key) files: serve HTTPS with mod_ssl (the vhost inherits it)."""
        super().__init__(site, run_dir, port, extra_config)
        self.vhost_conf = CONNECTOR_CONF if connector else vhost_conf
        self.connector = connector
        self.tls = tls

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def tls_config(self) -> str:
        if not self.tls:
            return ""
        cert, key = self.tls
        return (f"LoadModule socache_shmcb_module {MODULE_DIR}/mod_socache_shmcb.so\n"
                f"LoadModule ssl_module {MODULE_DIR}/mod_ssl.so\n"
                f"SSLSessionCache shmcb:{self.run_dir}/ssl_scache(512000)\n"
                f'SSLEngine on\nSSLCertificateFile "{cert}"\nSSLCertificateKeyFile "{key}"\n')

    def config_text(self) -> str:
        modules = "\n".join(f"LoadModule {m}_module {MODULE_DIR}/mod_{m}.so" for m in MODULES)
        user = f"User {APACHE_USER}\nGroup {APACHE_USER}\n" if running_as_root() else ""
        return f"""\
ServerRoot "{self.run_dir}"
ServerName 127.0.0.1
Listen 127.0.0.1:{self.port}
PidFile "{self.run_dir}/httpd.pid"
DefaultRuntimeDir "{self.run_dir}"
Mutex file:{self.run_dir}
ErrorLog "{self.error_log}"
LogLevel warn
LogFormat "%h %l %u %t \\"%r\\" %>s %b %D" timed
CustomLog "{self.run_dir}/apache_access.log" timed
TypesConfig /etc/mime.types
{user}{modules}
{ROOT_DIRECTORY}{self.tls_config()}{self.extra_config}
Define FCGI_SITE {self.site}
Define FCGI_PORT {self.port}
{f"Define FCGI_CONNECTOR_SO {CONNECTOR_SO}" if self.connector else ""}
Include "{self.vhost_conf}"
"""

    def prepare(self) -> None:
        if self.connector and not CONNECTOR_SO.exists():
            raise RuntimeError(f"the connector module is not built: run `make connector` ({CONNECTOR_SO})")

    def command(self, conf: Path) -> list[str]:
        return [APACHE_BIN, "-f", str(conf), "-DFOREGROUND"]

    def check_command(self, conf: Path) -> list[str]:
        return [APACHE_BIN, "-t", "-f", str(conf)]


class Backend:
    """``fcgi-backend run SITE`` as a child process, logging to run_dir/backend.log (or to our stderr)."""

    def __init__(self, site: Path, run_dir: Path, args: list[str] | None = None,
                 log_to_terminal: bool = False, cwd: Path | None = None, installed_command: bool = False) -> None:
        self.site = Path(site)
        self.cwd = cwd
        self.installed_command = installed_command
        self.run_dir = Path(run_dir)
        self.args = [str(a) for a in args or []]
        self.log_to_terminal = log_to_terminal
        self.proc: subprocess.Popen | None = None

    @property
    def socket_path(self) -> Path:
        """The site's socket, or the one ``--socket`` names."""
        if "--socket" in self.args:
            return Path(self.args[self.args.index("--socket") + 1])
        return self.site / "fcgi_backend.sock"

    @property
    def log_file(self) -> Path:
        return self.run_dir / "backend.log"

    def command(self) -> list[str]:
        """``python -m fcgi_backend run SITE ...``; with ``installed_command``, the ``fcgi-backend``
        script pip installed instead (which, unlike ``-m``, does not put the current folder on sys.path)."""
        program = [str(INSTALLED_COMMAND)] if self.installed_command else [sys.executable, "-m", "fcgi_backend"]
        cmd = [*program, "run", str(self.site), *self.args]
        if running_as_root() and "--socket-group" not in self.args and "--tcp" not in self.args:
            cmd += ["--socket-group", APACHE_USER]
        if running_as_root() and "--user" not in self.args:
            cmd += ["--allow-root"]  # (tests of --user give it)
        return cmd

    def ready(self) -> bool:
        return _unix_socket_open(self.socket_path)

    def start(self) -> "Backend":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._log = None if self.log_to_terminal else open(self.log_file, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=self._log, stderr=self._log and subprocess.STDOUT,
                                     cwd=self.cwd)
        try:
            wait_for(self.ready, 15, "the backend", self.proc, self.log_file)
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log:
            self._log.close()
        return self.proc.returncode

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace")

    def wait_for_log(self, fragment: str, timeout: float = 10) -> None:
        """Return once the log holds ``fragment``: a worker may write it just after the connection
        it is about has closed, while another worker already answers the next request."""
        wait_for(lambda: fragment in self.log_text(), timeout, f"the log line {fragment!r}", log_file=self.log_file)


class HTTPBackend(Backend):
    """``fcgi-backend serve-http SITE --listen 127.0.0.1:PORT``: the HTTP flavour, its own front."""

    def __init__(self, site: Path, run_dir: Path, args: list[str] | None = None, port: int | None = None,
                 scheme: str = "http", **kwargs) -> None:
        super().__init__(site, run_dir, args, **kwargs)
        self.port = port or free_port()
        self.scheme = scheme

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        program = [str(INSTALLED_COMMAND)] if self.installed_command else [sys.executable, "-m", "fcgi_backend"]
        root = ["--allow-root"] if running_as_root() and "--user" not in self.args else []
        return [*program, "serve-http", str(self.site), "--listen", f"127.0.0.1:{self.port}", *self.args, *root]

    def ready(self) -> bool:
        return _port_open(self.port)


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False
