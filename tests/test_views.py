"""Mustache views: pragma, partials from the webroot, caching, reload, and the webroot boundary."""

import html as html_module
import os
import time

import pytest

from fcgi_backend.views import TemplateError, ViewCache, split_pragma, template_candidates


@pytest.fixture
def webroot(tmp_path):
    root = tmp_path / "webroot"
    (root / "partials").mkdir(parents=True)
    (root / "partials" / "head.mustache").write_text("<h1>{{title}}</h1>")
    (root / "page.mustache").write_text("{{% handler:pager }}\n{{> partials/head}}<p>{{body}}</p>")
    (root / "plain.mustache").write_text("plain {{missing}}!")
    return root


def test_pragma_is_the_first_tag_and_is_removed():
    assert split_pragma("{{% handler:home }}\n<p>{{x}}</p>") == ("home", "<p>{{x}}</p>")
    assert split_pragma("<!doctype html>{{%handler:a.b-c}}x") == ("a.b-c", "<!doctype html>x")
    # not the first tag: no pragma
    assert split_pragma("{{x}}{{% handler:home }}")[0] is None
    assert split_pragma("no tags at all") == (None, "no tags at all")


def test_url_paths_map_to_template_names():
    assert template_candidates("/") == ["index.mustache"]
    assert template_candidates("/about") == ["about.mustache", "about/index.mustache"]
    assert template_candidates("/docs/") == ["docs/index.mustache"]
    assert template_candidates("/x.mustache") == ["x.mustache"]
    assert template_candidates("/../etc/passwd") == []
    assert template_candidates("/a/../../b") == []
    assert template_candidates("/a\0b") == []


def test_render_with_handler_values_partials_and_escaping(webroot):
    views = ViewCache(webroot)
    view = views.locate("/page")
    assert view.handler_name == "pager"
    html = views.render(view, {"title": "T", "body": "<script>"})
    assert html == "<h1>T</h1><p>&lt;script&gt;</p>"
    for value in ["a&b", "<", ">", '"', "'", "plain", "", "x" * 100 + "'", "caf\u00e9 & cr\u00e8me"]:
        assert views.render(view, {"title": value, "body": 7}) == f"<h1>{html_module.escape(value)}</h1><p>7</p>"


def test_missing_values_render_empty(webroot):
    views = ViewCache(webroot)
    assert views.render(views.locate("/plain"), {}) == "plain !"


def test_a_template_is_parsed_once_and_reread_when_changed(webroot):
    views = ViewCache(webroot)
    first = views.locate("/plain")
    assert views.locate("/plain") is first  # cached: the same parsed view
    path = webroot / "plain.mustache"
    path.write_text("changed {{x}}")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10_000_000))
    second = views.locate("/plain")
    assert second is not first
    assert views.render(second, {"x": 1}) == "changed 1"


def test_a_changed_partial_shows_on_the_next_render(webroot):
    views = ViewCache(webroot)
    view = views.locate("/page")
    assert "<h1>a</h1>" in views.render(view, {"title": "a"})
    head = webroot / "partials" / "head.mustache"
    head.write_text("<h2>{{title}}</h2>")
    os.utime(head, ns=(time.time_ns(), time.time_ns() + 10_000_000))
    assert "<h2>a</h2>" in views.render(view, {"title": "a"})


def test_paths_outside_the_webroot_are_never_templates(webroot, tmp_path):
    (tmp_path / "secret.mustache").write_text("secret")
    os.symlink(tmp_path / "secret.mustache", webroot / "link.mustache")
    views = ViewCache(webroot)
    assert views.locate("/../secret") is None
    assert views.load_name("../secret.mustache") is None
    assert views.load_name("/etc/passwd") is None
    assert views.locate("/link") is None  # a symlink that leads out
    (webroot / "bad.mustache").write_text("{{> ../secret}}")
    assert views.render(views.locate("/bad"), {}) == ""


def test_unclosed_section_is_a_template_error(webroot):
    (webroot / "broken.mustache").write_text("{{#items}} no end")
    with pytest.raises(TemplateError, match="broken.mustache"):
        ViewCache(webroot).locate("/broken")
