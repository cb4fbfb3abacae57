"""Routes the session tests need: a bare counter, a value JSON cannot hold, a value too big for a full disk."""

import datetime
import os
import time

from fcgi_backend import Response


def init_module(registry):
    registry.route("/count", count)
    registry.route("/member", member)
    registry.route("/session-bad-value", bad_value)
    registry.route("/session-big-value", big_value)
    registry.route("/session-hold", hold)


def count(request):
    """Read the counter, add one, save: lost updates would show as a short count."""
    request.session["n"] = request.session.get("n", 0) + 1
    return Response.json({"n": request.session["n"]})


def member(request):
    """Which backend host answered (FCGI_TEST_MEMBER in its environment), and the session's count."""
    request.session["n"] = request.session.get("n", 0) + 1
    return Response.json({"member": os.environ.get("FCGI_TEST_MEMBER", "-"), "n": request.session["n"]})


def bad_value(request):
    request.session["when"] = datetime.datetime.now()
    return {}


def big_value(request):
    request.session["visits"] = request.session.get("visits", 0) + 1
    request.session["blob"] = "x" * 2_000_000
    return Response.json({"ok": True})


def hold(request):
    """Use the session, then keep it for ?s= seconds (another request of this visitor waits)."""
    request.session["held"] = request.session.get("held", 0) + 1
    time.sleep(float(request.query.get("s", "1")))
    return Response.json({"held": request.session["held"]})
