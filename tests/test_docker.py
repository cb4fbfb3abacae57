"""The docker-compose stack in docker/: valid, and in step with the vhost and the CLI it packages.

No Docker engine is needed: docker-compose checks the file, and the rest is read from the files.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import subprocess

import pytest
import yaml

from conftest import REPO

DOCKER = REPO / "docker"
COMPOSE_FILE = DOCKER / "docker-compose.yml"
DOCKERFILE = DOCKER / "Dockerfile"
APACHE_SERVICES = ("apache", "apache-connector")


def compose_config() -> dict:
    """The compose file as docker-compose resolves it (with the optional connector service)."""
    out = subprocess.run(["docker-compose", "-f", str(COMPOSE_FILE), "--profile", "connector", "config"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def vhost_default(conf: str, name: str) -> str:
    match = re.search(rf"^\s*Define {name} (\S+)\s*$", (REPO / "apache_conf" / conf).read_text(), re.M)
    assert match, f"{conf} defines no default {name}"
    return match.group(1)


def as_mount(volume) -> tuple[str, str]:
    """(source, target) of a volume in either of compose's syntaxes."""
    if isinstance(volume, str):
        source, target = volume.split(":")[:2]
        return source, target
    return volume["source"], volume["target"]


def stages() -> dict[str, list[str]]:
    """Dockerfile instructions by stage name (continuation lines joined)."""
    text = re.sub(r"\\\n\s*(#.*\n\s*)*", " ", DOCKERFILE.read_text())
    result: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if match := re.match(r"FROM \S+ AS (\S+)$", line):
            current = match.group(1)
            result[current] = []
        elif line and not line.startswith("#") and current:
            result[current].append(line)
    return result


def test_compose_file_is_valid_and_builds_each_service_from_the_dockerfile():
    services = compose_config()["services"]
    assert set(services) == {"backend", *APACHE_SERVICES}
    targets = stages()
    for name, service in services.items():
        build = service["build"]
        assert (REPO / build["dockerfile"]).resolve() == DOCKERFILE
        assert build["target"] in targets, f"{name} builds stage {build['target']}, which the Dockerfile lacks"


def test_every_service_shares_the_site_where_the_vhost_expects_it():
    site_path = vhost_default("fcgi_backend.conf", "FCGI_SITE")
    assert vhost_default("fcgi_backend_connector.conf", "FCGI_SITE") == site_path
    services = compose_config()["services"]
    sources = set()
    for name, service in services.items():
        mounts = [mount for mount in map(as_mount, service["volumes"]) if mount[1] == site_path]
        assert mounts, f"{name} does not mount the site at {site_path}"
        sources.add(mounts[0][0])
    assert len(sources) == 1, "the backend and Apache must see the same site folder (the socket lives in it)"
    source = sources.pop()
    assert (REPO / source).resolve() == (REPO / "examples" / "site").resolve()


def test_the_backend_serves_that_site_with_a_socket_apache_can_open():
    site_path = vhost_default("fcgi_backend.conf", "FCGI_SITE")
    command = compose_config()["services"]["backend"]["command"]
    assert command[:3] == ["fcgi-backend", "run", site_path]
    # the workers run as www-data, and the socket is made for its group: Debian's Apache runs as www-data
    assert command[command.index("--user") + 1] == "www-data" and "--socket-group" not in command
    # the image's own default command agrees
    cmd = next(line for line in stages()["backend"] if line.startswith("CMD"))
    assert shlex.split(cmd)[1].strip('[",') == "fcgi-backend"
    assert site_path in cmd and "www-data" in cmd


@pytest.mark.parametrize("stage", ["wheel", "apache", "connector-build", "apache-connector", "apache-balancer"])
def test_what_the_dockerfile_copies_exists_and_reaches_the_build(stage):
    ignored = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    copies = [shlex.split(line)[1:-1] for line in stages()[stage]
              if line.startswith("COPY") and "--from=" not in line]
    assert copies
    for sources in copies:
        for source in sources:
            path = source.rstrip("/")
            assert (REPO / path).exists(), f"COPY {source}: no such file in the repository"
            assert not any(fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/") for pattern in ignored), \
                f"COPY {source} is excluded by .dockerignore"


def test_the_connector_image_loads_the_module_where_the_vhost_looks():
    so = vhost_default("fcgi_backend_connector.conf", "FCGI_CONNECTOR_SO")
    copied = [shlex.split(line)[-1] for line in stages()["apache-connector"] if line.startswith("COPY --from=")]
    assert so in copied


# ---- docker-compose.scale.yml: several backends behind the balancer ------------------------------

SCALE_FILE = DOCKER / "docker-compose.scale.yml"


def scale_config() -> dict:
    out = subprocess.run(["docker-compose", "-f", str(SCALE_FILE), "config"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def test_the_scaled_backends_listen_on_the_stacks_network_for_its_addresses_only():
    config = scale_config()
    command = config["services"]["backend"]["command"]
    subnet = config["networks"]["stack"]["ipam"]["config"][0]["subnet"]
    assert command[command.index("--tcp") + 1] == "0.0.0.0:9000"
    assert command[command.index("--allowed-clients") + 1] == subnet
    assert command[command.index("--sessions") + 1].startswith("postgresql://fcgi:")
    assert "@postgres/" in command[command.index("--sessions") + 1] and "postgres" in config["services"]
    # the balancer's health checks ask the path the backends answer
    hcuri = re.search(r"hcuri=(\S+)", (REPO / "apache_conf" / "fcgi_backend_balancer.conf").read_text()).group(1)
    assert command[command.index("--ping-path") + 1] == hcuri
    assert "ports" not in config["services"]["backend"]  # reached by the balancer only
    assert config["services"]["balancer"]["build"]["target"] == "apache-balancer"


def test_the_balancer_start_writes_one_member_per_backend_container(tmp_path):
    """balancer-start with docker's DNS answer faked: three containers, three members with the
    template's health check; then it execs Apache (here: a stand-in that checks its arguments)."""
    conf = tmp_path / "balancer.conf"
    conf.write_text((REPO / "apache_conf" / "fcgi_backend_balancer.conf").read_text())
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "getent").write_text("#!/bin/sh\n[ \"$2\" = backend ] || exit 2\n"
                                    "printf '172.30.57.5 STREAM backend\\n172.30.57.4 STREAM\\n"
                                    "172.30.57.5 DGRAM\\n172.30.57.6 STREAM\\n'\n")
    (bin_dir / "getent").chmod(0o755)
    envvars = tmp_path / "envvars"
    envvars.write_text(f"APACHE_RUN_DIR={tmp_path}/run\nAPACHE_LOCK_DIR={tmp_path}/lock\n")
    out = subprocess.run([str(DOCKER / "balancer-start.sh")], capture_output=True, text=True, timeout=30,
                         env={"PATH": f"{bin_dir}:/usr/bin:/bin", "BALANCER_CONF": str(conf),
                              "APACHE_ENVVARS": str(envvars), "APACHE_BIN": "/bin/echo"})
    assert out.returncode == 0 and out.stdout.strip() == "-D FOREGROUND", out.stderr
    members = [line.split()[1] for line in conf.read_text().splitlines() if "BalancerMember" in line]
    assert members == ['"fcgi://172.30.57.4:9000"', '"fcgi://172.30.57.5:9000"', '"fcgi://172.30.57.6:9000"']
    assert all("hcuri=/fcgi-ping" in line and "status=+H" not in line
               for line in conf.read_text().splitlines() if "BalancerMember" in line)
    assert (tmp_path / "run").is_dir()
