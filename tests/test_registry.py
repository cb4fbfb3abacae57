"""The handler registry: names, routes, placeholders, methods."""

import pytest

from fcgi_backend.registry import Registry


def handler(request):
    return {}


def test_handler_names_are_unique():
    registry = Registry()
    registry.handler("home", handler)
    assert registry.get_handler("home") is handler
    with pytest.raises(ValueError, match="already registered"):
        registry.handler("home", handler)


def test_handler_works_as_a_decorator():
    registry = Registry()

    @registry.handler("deco")
    def deco(request):
        return {}

    assert registry.get_handler("deco") is deco


def test_exact_route_wins_over_a_placeholder_registered_first():
    registry = Registry()
    registry.route("/users/<id>", handler)
    registry.route("/users/me", handler, template="me.mustache")
    route, params = registry.match("/users/me")
    assert route.template == "me.mustache" and params == {}
    route, params = registry.match("/users/42")
    assert params == {"id": "42"}


def test_placeholders_match_one_segment_or_the_rest():
    registry = Registry()
    registry.route("/files/<path:rest>", handler)
    registry.route("/a/<x>/b", handler)
    assert registry.match("/files/x/y/z.txt")[1] == {"rest": "x/y/z.txt"}
    assert registry.match("/a/1/b")[1] == {"x": "1"}
    assert registry.match("/a/1/2/b") is None
    assert registry.match("/nothing") is None


def test_get_implies_head_and_methods_are_upper_case():
    registry = Registry()
    registry.route("/x", handler, methods=["get", "post"])
    assert registry.match("/x")[0].methods == {"GET", "HEAD", "POST"}


def test_bad_routes_are_refused():
    registry = Registry()
    with pytest.raises(ValueError):
        registry.route("no-slash", handler)
    with pytest.raises(TypeError):
        registry.route("/x", "not callable")
