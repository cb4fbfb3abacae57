"""``fcgi-backend apache-conf``: a ready <VirtualHost> for one site, from the templates in
``apache_conf/`` (shipped inside the package as ``fcgi_backend/apache_conf``).

The templates take the site folder and port from ``Define``s, which are global to the whole of
Apache: two sites included with them would both get the last one's values. The vhost printed
here has every path and the port written out instead, so any number of sites can sit in one
Apache, each from its own file.
"""

from __future__ import annotations

import hashlib
import re
from importlib import resources
from pathlib import Path

TEMPLATES = {False: "fcgi_backend.conf", True: "fcgi_backend_connector.conf", "balancer": "fcgi_backend_balancer.conf"}
_MEMBERS = re.compile(r'^(\s*)BalancerMember "fcgi://[^"]+" (.*?)(?: status=\+H)?\n', re.M)
_HOST_PORT = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}")
CONNECTOR_SO = "/usr/lib/apache2/modules/mod_fcgi_backend.so"
_DEFINE_BLOCK = re.compile(r"^<IfDefine !(\w+)>\n(?:.*\n)*?</IfDefine>\n", re.M)
_UNSAFE_PATH = re.compile(r'[\s"\\$%]')


class ApacheConfError(ValueError):
    """The site cannot be written into a vhost (a path Apache's syntax cannot hold)."""


def template_text(connector) -> str:
    """The template as shipped: inside the installed package, or beside it in a checkout."""
    name = TEMPLATES[connector]
    try:
        return (resources.files("fcgi_backend") / "apache_conf" / name).read_text()
    except (FileNotFoundError, NotADirectoryError, ModuleNotFoundError):
        return (Path(__file__).resolve().parent.parent / "apache_conf" / name).read_text()


def worker_name(site: Path) -> str:
    """The host name in the site's ``fcgi://`` URL: never connected to (the socket is), but it names
    mod_proxy's worker, so each site gets its own: its folder's name and a digest of its path."""
    stem = re.sub(r"[^a-z0-9-]+", "-", site.name.lower()).strip("-")[:40] or "site"
    return f"{stem}-{hashlib.sha256(str(site).encode()).hexdigest()[:8]}"


def vhost_for(site: Path, port: int = 80, connector: bool = False, socket: Path | None = None,
              server_name: str | None = None, listen: bool = False, connector_so: str = CONNECTOR_SO,
              balancer: list[str] = (), standby: list[str] = (), ping_path: str = "/fcgi-ping") -> str:
    """The vhost serving ``site`` on ``port``: through its unix socket, or with ``balancer`` (and
    ``standby``) HOST:PORT members over TCP."""
    for member in [*balancer, *standby]:
        if not _HOST_PORT.fullmatch(member):
            raise ApacheConfError(f"balancer member {member!r}: give HOST:PORT")
    if standby and not balancer:
        raise ApacheConfError("a standby needs --balancer members too")
    if balancer and (connector or socket is not None):
        raise ApacheConfError("--balancer sends requests over TCP: not with --connector or --socket")
    for what, path in (("site folder", site), ("socket", socket)):
        if path is not None and _UNSAFE_PATH.search(str(path)):
            raise ApacheConfError(f"the {what} {path} has a space, quote, backslash, $ or %: Apache's config "
                                  f"cannot name it as written; use a path without them")
    if not 0 < port < 65536:
        raise ApacheConfError(f"port {port} is out of range")
    if server_name is not None and not re.fullmatch(r"[A-Za-z0-9.-]+", server_name):
        raise ApacheConfError(f"server name {server_name!r}: letters, digits, '.' and '-' only")
    text = _DEFINE_BLOCK.sub("", template_text("balancer" if balancer else connector))
    if balancer:
        text = _balancer_members(text, balancer, standby, ping_path).replace(
            "balancer://fcgi-backends", f"balancer://{worker_name(site)}")
    socket_path = str(socket) if socket is not None else f"{site}/fcgi_backend.sock"
    text = (text.replace("${FCGI_SITE}/fcgi_backend.sock", socket_path)
                .replace("fcgi://localhost", f"fcgi://{worker_name(site)}")
                .replace("${FCGI_SITE}", str(site))
                .replace("${FCGI_PORT}", str(port))
                .replace("${FCGI_CONNECTOR_SO}", connector_so))
    head = [f"# The site {site}, served by fcgi-backend on port {port}.",
            f"# Written by `fcgi-backend apache-conf`; start its backend with: fcgi-backend run {site}"]
    if balancer:
        head[1:] = ["# Written by `fcgi-backend apache-conf`; start the backend on each member host with:",
                    f"#     fcgi-backend run {site} --tcp HOST:PORT --allowed-clients THIS_HOST --ping-path {ping_path}",
                    "# (sessions in a shared store: --sessions postgresql://...); modules: a2enmod proxy_fcgi "
                    "proxy_balancer proxy_hcheck lbmethod_bybusyness slotmem_shm rewrite"]
    if listen:
        head.append(f"Listen {port}")
    extra = []
    if server_name:
        extra.append(f"    ServerName {server_name}")
    if connector and socket is not None:
        extra.append(f'    FcgiBackendSocket "{socket_path}"')
    if extra:
        text = re.sub(r"(<VirtualHost [^>]*>\n)", lambda m: m.group(1) + "\n".join(extra) + "\n", text, count=1)
    return "\n".join(head) + "\n" + _strip_template_comments(text)


def _balancer_members(text: str, members: list[str], standby: list[str], ping_path: str) -> str:
    """The template's example members replaced by ``members`` and ``standby`` (status=+H), with
    the template's parameters and the health check on ``ping_path``."""
    examples = list(_MEMBERS.finditer(text))
    indent, params = examples[0].group(1), examples[0].group(2).replace("hcuri=/fcgi-ping", f"hcuri={ping_path}")
    lines = [f'{indent}BalancerMember "fcgi://{m}" {params}\n' for m in members]
    lines += [f'{indent}BalancerMember "fcgi://{m}" {params} status=+H\n' for m in standby]
    return text[:examples[0].start()] + "".join(lines) + text[examples[-1].end():]


def _strip_template_comments(text: str) -> str:
    """The template's opening comments tell how to edit it by hand: not needed once filled in."""
    lines = text.splitlines(keepends=True)
    while lines and (lines[0].startswith("#") or not lines[0].strip()):
        lines.pop(0)
    return "".join(lines)
