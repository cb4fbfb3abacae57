"""Start a real nginx or lighttpd on loopback in front of a backend, for the tests.

Each runs from a main config written here (a run folder, logs, loopback port) that includes the
project's own example config (examples/nginx/, examples/lighttpd/) with its marked places edited
as a user would: the site folder and the port.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from apache_harness import APACHE_USER, REPO, WebServer, free_port, running_as_root

NGINX_SITE_CONF = REPO / "examples" / "nginx" / "fcgi_backend.conf"
NGINX_PROXY_CONF = REPO / "examples" / "nginx" / "serve_http.conf"  # in front of the HTTP flavour
LIGHTTPD_SITE_CONF = REPO / "examples" / "lighttpd" / "fcgi_backend.conf"
NGINX_BIN = shutil.which("nginx", path="/usr/sbin:/usr/bin") or "/usr/sbin/nginx"
LIGHTTPD_BIN = shutil.which("lighttpd", path="/usr/sbin:/usr/bin") or "/usr/sbin/lighttpd"
EXAMPLE_SITE = "/var/www/example"


class ExampleConfigServer(WebServer):
    """A web server whose site config is one of the examples, edited for this site and port."""

    def prepare(self) -> None:
        if running_as_root():
            shutil.chown(self.run_dir, APACHE_USER)  # its workers write temporary files here

    def site_config(self, template: Path) -> str:
        """The example config with its marked places edited for this site and port."""
        text = template.read_text().replace(EXAMPLE_SITE, str(self.site))
        return text.replace("fcgi_backend_example", f"fcgi_backend_{self.port}")


class Nginx(ExampleConfigServer):
    name = "nginx"

    def site_text(self) -> str:
        site = re.sub(r"listen 80;", f"listen 127.0.0.1:{self.port};", self.site_config(NGINX_SITE_CONF))
        # relative to /etc/nginx/ where a user puts the file; this config lives elsewhere
        return site.replace("include fastcgi_params;", "include /etc/nginx/fastcgi_params;")

    def config_text(self) -> str:
        site = self.site_text()
        user = f"user {APACHE_USER};\n" if running_as_root() else ""
        run = self.run_dir
        return f"""\
{user}daemon off;
worker_processes 1;
pid {run}/nginx.pid;
error_log {self.error_log} info;
events {{ worker_connections 1024; }}
http {{
    include /etc/nginx/mime.types;
    access_log {run}/nginx_access.log;
    client_body_temp_path {run}/body;
    fastcgi_temp_path {run}/fastcgi;
    proxy_temp_path {run}/proxy;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;
{site}
{self.extra_config}
}}
"""

    def command(self, conf: Path) -> list[str]:
        return [NGINX_BIN, "-c", str(conf), "-p", str(self.run_dir)]

    def check_command(self, conf: Path) -> list[str]:
        return [NGINX_BIN, "-t", "-q", "-c", str(conf), "-p", str(self.run_dir)]


class NginxProxy(Nginx):
    """nginx as a reverse proxy in front of the HTTP flavour at ``backend`` (HOST:PORT), from
    examples/nginx/serve_http.conf; with ``tls`` (certificate, key) also over TLS on ``tls_port``."""

    def __init__(self, site: Path, run_dir: Path, backend: str, tls: tuple[Path, Path] | None = None) -> None:
        super().__init__(site, run_dir)
        self.backend, self.tls = backend, tls
        self.tls_port = free_port() if tls else None

    def site_text(self) -> str:
        site = self.site_config(NGINX_PROXY_CONF).replace("server 127.0.0.1:8000;", f"server {self.backend};")
        listen = f"listen 127.0.0.1:{self.port};"
        if self.tls:
            listen += (f"\n    listen 127.0.0.1:{self.tls_port} ssl;\n    ssl_certificate {self.tls[0]};"
                       f"\n    ssl_certificate_key {self.tls[1]};")
        return site.replace("listen 80;", listen)


class Lighttpd(ExampleConfigServer):
    name = "lighttpd"

    def config_text(self) -> str:
        site = self.site_config(LIGHTTPD_SITE_CONF).replace("server.port = 80", f"server.port = {self.port}")
        user = (f'server.username = "{APACHE_USER}"\nserver.groupname = "{APACHE_USER}"\n'
                if running_as_root() else "")
        run = self.run_dir
        return f"""\
server.bind = "127.0.0.1"
server.pid-file = "{run}/lighttpd.pid"
server.errorlog = "{self.error_log}"
{user}server.modules += ("mod_accesslog")
accesslog.filename = "{run}/lighttpd_access.log"
mimetype.assign = (".css" => "text/css", ".html" => "text/html", ".txt" => "text/plain",
                   ".png" => "image/png", ".js" => "text/javascript")
{site}
{self.extra_config}
"""

    def command(self, conf: Path) -> list[str]:
        return [LIGHTTPD_BIN, "-D", "-f", str(conf)]

    def check_command(self, conf: Path) -> list[str]:
        return [LIGHTTPD_BIN, "-tt", "-f", str(conf)]


def available(server: type[ExampleConfigServer]) -> bool:
    return os.path.exists(NGINX_BIN if issubclass(server, Nginx) else LIGHTTPD_BIN)
