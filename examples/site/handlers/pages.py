"""Handlers of the example site: both ways of reaching a view, and a form post."""

import datetime
import sqlite3

from fcgi_backend import HTTPError, Response


def init_module(registry):
    """Called once at start: register handlers (named by templates) and routes (named by URL)."""
    guestbook = Guestbook(registry.site.sqlite_dbs / "guestbook.sqlite")

    # (a) templates name these in their first tag: {{% handler:home }}
    registry.handler("home", home)
    registry.handler("guestbook", guestbook.page, csrf=True)  # its form carries {{csrf_token}}
    registry.handler("account", account, csrf=True)
    registry.handler("upload_demo", UploadBox(registry.site.sqlite_dbs / "uploads").page)

    # (b) routes: URLs that name no file in the webroot
    registry.route("/hello/<name>", hello, template="views/hello.mustache")
    registry.route("/api/time", api_time)


def home(request):
    return {
        "title": "fcgi_backend example",
        "visitor": request.query.get("name", "stranger"),
        "now": datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
    }


def hello(request):
    return {"title": "Hello", "name": request.path_params["name"]}


def api_time(request):
    return {"time": datetime.datetime.now(datetime.timezone.utc).isoformat()}


# The one account of the example (a real site keeps hashed passwords in its database).
ACCOUNTS = {"demo": "demo"}


def account(request):
    """Log in and out; count this visitor's visits; say what happened with flash messages."""
    session = request.session
    if request.method == "POST":
        if request.form.get("action") == "logout":
            session.clear()  # the session ends: its data and its cookie go
            session.flash("You are logged out.")
        else:
            name, password = request.form.get("name", ""), request.form.get("password", "")
            if ACCOUNTS.get(name) != password:
                session.flash("Wrong name or password.", "error")
            else:
                session.regenerate()  # a new id at login: one seen before it is worth nothing
                session["user"] = name
                session.flash(f"Welcome, {name}.")
        return Response.redirect("/account", status=303)
    session["visits"] = session.get("visits", 0) + 1
    return {"title": "Account", "user": session.get("user"), "visits": session["visits"],
            "flashes": session.flashes()}


class Guestbook:
    """A list of messages kept in the site's SQLiteDBs folder."""

    def __init__(self, path):
        self.path = path
        with sqlite3.connect(self.path) as db:
            db.execute("CREATE TABLE IF NOT EXISTS entries (id INTEGER PRIMARY KEY, name TEXT, message TEXT)")

    def page(self, request):
        if request.method == "POST":
            name = request.form.get("name", "").strip()
            message = request.form.get("message", "").strip()
            if not name or not message:
                raise HTTPError(400, "Both a name and a message are needed.")
            with sqlite3.connect(self.path) as db:
                db.execute("INSERT INTO entries (name, message) VALUES (?, ?)", (name, message))
            return Response.redirect("/guestbook", status=303)  # post, redirect, get
        with sqlite3.connect(self.path) as db:
            rows = db.execute("SELECT name, message FROM entries ORDER BY id DESC LIMIT 50").fetchall()
        return {"title": "Guestbook", "entries": [{"name": n, "message": m} for n, m in rows]}


class UploadBox:
    """Files sent through the upload form, kept in SITE/SQLiteDBs/uploads (the site's state: the folder
    the server's user owns)."""

    def __init__(self, folder):
        self.folder = folder
        self.folder.mkdir(exist_ok=True)

    def page(self, request):
        stored = []
        for _, upload in request.files.items(multi=True):
            if upload.filename:  # a file input left empty sends no name
                destination = upload.move_into(self.folder)  # "a.txt", or "a-2.txt" if taken: none replaced
                stored.append({"name": destination.name, "size": upload.size})
        return {
            "title": "Upload",
            "comment": request.form.get("comment", ""),
            "stored": stored,
            "files": sorted(p.name for p in self.folder.iterdir()),
        }
