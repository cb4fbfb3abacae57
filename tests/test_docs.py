"""Every Python code block in the README and docs/ runs, so a sample pasted from them works.

A block whose fence names a file (```` ```python handlers/shop.py ````, ```` ```mustache
webroot/index.mustache ````) is written to that path of one site per document, in order; any
other Python block runs as a script in that site's folder (``__name__`` is not ``"__main__"``, so
a program's main part is only compiled), and a block that defines ``init_module`` has it called
with a registry, as the server does. At the end the site's handler modules must load.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w+)(?: +(\S+))?\n(.*?)^```$", re.S | re.M)

RUNNER = """
import sys
from fcgi_backend.registry import Registry
from fcgi_backend.site import SiteLayout

source, where = sys.stdin.read(), sys.argv[1]
namespace = {"__name__": "__doc_sample__"}
exec(compile(source, where, "exec"), namespace)
if "init_module" in namespace:
    namespace["init_module"](Registry(SiteLayout.open(".")))
"""

LOAD_SITE = """
from fcgi_backend.loader import load_handlers
from fcgi_backend.registry import Registry
from fcgi_backend.site import SiteLayout

site = SiteLayout.open(".")
print(load_handlers(site.handlers, Registry(site)))
"""


def code_blocks(document: Path):
    text = document.read_text()
    for match in FENCE.finditer(text):
        language, path, code = match.groups()
        yield language, path, code, text.count("\n", 0, match.start()) + 2


def run_python(code: str, where: str, site: Path) -> None:
    out = subprocess.run([sys.executable, "-c", RUNNER, where], input=code, capture_output=True, text=True,
                         cwd=site, timeout=60)
    assert out.returncode == 0, f"the block at {where} failed:\n{out.stderr[-3000:]}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_every_python_block_runs_as_pasted(document, tmp_path):
    site = tmp_path / "site"
    (site / "webroot").mkdir(parents=True)
    (site / "handlers").mkdir()
    ran = 0
    for language, path, code, line in code_blocks(document):
        where = f"{document.relative_to(REPO)}:{line}"
        if path and language in ("python", "mustache"):
            target = site / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(code)
        elif language == "python":
            run_python(code, where, site)
            ran += 1
    loaded = subprocess.run([sys.executable, "-c", LOAD_SITE], capture_output=True, text=True, cwd=site,
                            timeout=60)
    assert loaded.returncode == 0, f"{document.name}'s handler modules do not load:\n{loaded.stderr[-3000:]}"
    if document.name in ("README.md", "HANDLERS.md"):
        assert ran > 0


def test_a_block_that_names_something_undefined_fails_here(tmp_path):
    """The check itself: the README's sample once registered an `api_time` it never defined."""
    (tmp_path / "webroot").mkdir()
    with pytest.raises(AssertionError, match="NameError: name 'api_time' is not defined"):
        run_python("def init_module(registry):\n    registry.route('/api/time', api_time)\n", "sample", tmp_path)


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz (dot) is not installed")
@pytest.mark.parametrize("source", sorted((REPO / "docs").glob("*.dot")), ids=lambda p: p.name)
def test_each_picture_is_drawn_from_its_source(source):
    """docs/NAME.svg is what `make docs` draws from docs/NAME.dot: a changed source was redrawn."""
    drawn = subprocess.run(["dot", "-Tsvg", str(source)], capture_output=True, text=True, check=True).stdout
    assert source.with_suffix(".svg").read_text() == drawn, f"run `make docs`: {source.name} changed"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_every_toml_block_is_a_config_file_the_server_takes(document, tmp_path):
    from fcgi_backend.config import load_config_file

    for language, _, code, line in code_blocks(document):
        if language == "toml":
            path = tmp_path / f"line{line}.toml"
            path.write_text(code)
            load_config_file(path)  # raises ConfigError naming the key it does not know
