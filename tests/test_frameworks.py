"""Applications we did not write, loaded with --app as gunicorn loads them: Django and Flask."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from apache_harness import Apache, Backend
from conftest import backend_command, build_test_site
from fcgi_client import FastCGIClient, cgi_params

DJANGO_ADMIN = [sys.executable, "-m", "django"]


def get(backend, uri, **extra):
    with FastCGIClient(backend.socket_path, timeout=20) as client:
        return client.request(cgi_params("GET", uri, HTTP_HOST="localhost", **extra))


def test_a_django_startproject_folder_with_module_colon_name(workdir):
    """``--app mysite.wsgi:application`` run from the project folder, as with gunicorn: the
    folder was not on sys.path for the installed command, so the import failed."""
    project = workdir / "project"
    project.mkdir()
    subprocess.run([*DJANGO_ADMIN, "startproject", "mysite", str(project)], check=True)
    site = build_test_site(workdir)
    backend = Backend(site, workdir / "run", ["--app", "mysite.wsgi:application"], cwd=project,
                      installed_command=True).start()
    try:
        reply = get(backend, "/")
        assert reply.status == 200 and b"The install worked successfully" in reply.body
        assert get(backend, "/admin/login/").status == 200
    finally:
        backend.stop()


ONE_FILE_DJANGO = '''\
"""A whole Django application in one file."""
from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.http import JsonResponse
from django.urls import path

settings.configure(DEBUG=False, ROOT_URLCONF=__name__, ALLOWED_HOSTS=["localhost"], SECRET_KEY="test")


def hello(request, name):
    return JsonResponse({"hello": name, "path": request.path, "script_name": request.META["SCRIPT_NAME"]})


urlpatterns = [path("hello/<str:name>", hello)]
application = get_wsgi_application()
'''


def test_a_one_file_django_app_with_file_colon_name(workdir):
    """Django imports ROOT_URLCONF by module name: a FILE.py loaded without registering it under
    its name answered 500 to every request."""
    app_file = workdir / "tinyapp.py"
    app_file.write_text(ONE_FILE_DJANGO)
    site = build_test_site(workdir)
    backend = Backend(site, workdir / "run", ["--app", f"{app_file}:application"]).start()
    try:
        reply = get(backend, "/hello/django")
        assert reply.status == 200, reply.body[:500]
        assert json.loads(reply.body) == {"hello": "django", "path": "/hello/django", "script_name": ""}
    finally:
        backend.stop()


@pytest.mark.parametrize("connector", [False, True], ids=["mod_proxy_fcgi", "connector"])
def test_a_one_file_django_app_through_apache(workdir, connector):
    app_file = workdir / "tinyapp.py"
    app_file.write_text(ONE_FILE_DJANGO.replace('ALLOWED_HOSTS=["localhost"]', 'ALLOWED_HOSTS=["127.0.0.1"]'))
    site = build_test_site(workdir)
    backend = Backend(site, workdir / "run", ["--app", f"{app_file}:application"]).start()
    apache = Apache(site, workdir / "run", connector=connector).start()
    try:
        import requests

        answer = requests.get(apache.url + "/hello/caf%C3%A9", timeout=10)
        assert answer.status_code == 200, answer.text[:500]
        assert answer.json() == {"hello": "caf\u00e9", "path": "/hello/caf\u00e9", "script_name": ""}
    finally:
        apache.stop()
        backend.stop()


def test_a_file_imports_its_neighbours(workdir):
    (workdir / "helpers_for_app.py").write_text("GREETING = b'hi from a neighbour'\n")
    (workdir / "neighbourly.py").write_text(
        "from helpers_for_app import GREETING\n"
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [GREETING]\n")
    site = build_test_site(workdir)
    backend = Backend(site, workdir / "run", ["--app", f"{workdir / 'neighbourly.py'}:app"]).start()
    try:
        assert get(backend, "/").body == b"hi from a neighbour"
    finally:
        backend.stop()


@pytest.mark.parametrize("spec, message", [
    ("nosuchmodule_xyz:app", "failed to import: ModuleNotFoundError"),
    ("json:nothing_here", "has no callable named 'nothing_here'"),
    ("/no/such/file.py:app", "no such file"),
    ("justamodule", "wants MODULE:CALLABLE"),
])
def test_a_wrong_app_is_a_clear_error_exit_1(site, spec, message):
    out = subprocess.run(backend_command("run", site, "--app", spec),
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 1 and message in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("connector", [False, True], ids=["mod_proxy_fcgi", "connector"])
def test_a_flask_app_through_apache(workdir, connector):
    """Through the connector, Flask saw /caf\u00e9 for /where/caf\u00e9 (SCRIPT_NAME /where: Apache's
    split at the deepest path on disk), and its routes under a prefix answered 404."""
    site = build_test_site(workdir)
    flask_app = Path(__file__).resolve().parent / "flask_app.py"
    backend = Backend(site, workdir / "run", ["--app", f"{flask_app}:app"]).start()
    apache = Apache(site, workdir / "run", connector=connector).start()
    try:
        import requests

        got = requests.get(apache.url + "/where?x=1", timeout=10).json()
        assert (got["path"], got["query"]) == ("/where", {"x": "1"})
        got = requests.get(apache.url + "/where/caf%C3%A9/2?x=1", timeout=10).json()
        assert (got["script_root"], got["path"], got["url"]) == \
            ("", "/where/caf\u00e9/2", apache.url + "/where/caf\u00e9/2?x=1")  # (Werkzeug's url is an IRI)
        files = {"f": ("a.txt", b"flask upload " * 1000, "text/plain")}
        got = requests.post(apache.url + "/upload", files=files, timeout=10).json()
        assert (got["filename"], got["size"]) == ("a.txt", 13000)
    finally:
        apache.stop()
        backend.stop()
