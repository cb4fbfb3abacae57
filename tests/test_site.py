"""End to end, one list of checks for both flavours: the FastCGI flavour behind a real Apache 2.4
(apache_conf/fcgi_backend.conf), and the HTTP flavour on its own (fcgi-backend serve-http)."""

import http.client
import os
import re
import socket
import time

import pytest
import requests

from conftest import Stack, post_form


def get(site_stack, path, **kw):
    return requests.get(site_stack.url + path, timeout=10, allow_redirects=False, **kw)


def backend_saw(site_stack, fragment):
    return fragment in site_stack.backend.log_text()


def test_template_page_with_handler_and_partials(site_stack):
    r = get(site_stack, "/?name=Ada")
    assert r.status_code == 200 and r.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "<h1>Welcome, Ada</h1>" in r.text
    assert "<nav>" in r.text and "<footer>" in r.text  # the partials


def test_a_query_sent_unencoded_is_read_as_utf8(site_stack):
    """Apache passes a query's raw UTF-8 bytes on as they came (curl sends "caf\u00e9" so): the
    handler read them as Latin-1, "caf\u00c3\u00a9". llhttp refuses them in serve-http (400)."""
    with socket.create_connection(("127.0.0.1", site_stack.port), timeout=10) as client:
        client.sendall(b"GET /?name=caf\xc3\xa9 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        answer = b"".join(iter(lambda: client.recv(65536), b""))
    if site_stack.front == "http":
        assert answer.startswith(b"HTTP/1.1 400 ")
    else:
        assert answer.startswith(b"HTTP/1.1 200 ") and "<h1>Welcome, caf\u00e9</h1>".encode() in answer


def test_query_values_are_html_escaped(site_stack):
    r = get(site_stack, "/", params={"name": "<script>alert(1)</script>"})
    assert "<script>alert" not in r.text and "&lt;script&gt;" in r.text


def test_extensionless_url_serves_the_mustache_file(site_stack):
    a, b = get(site_stack, "/about"), get(site_stack, "/about.mustache")
    assert a.status_code == b.status_code == 200
    assert "<h1>About</h1>" in a.text and a.text == b.text


def test_folder_index_template(site_stack):
    r = get(site_stack, "/docs/")
    assert r.status_code == 200 and "docs index" in r.text


def test_route_with_placeholder_and_template(site_stack):
    r = get(site_stack, "/hello/Grace")
    assert r.status_code == 200 and "<h1>Hello, Grace!</h1>" in r.text


def test_route_without_template_answers_json(site_stack):
    r = get(site_stack, "/api/time")
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    assert "time" in r.json()


def test_static_files_are_served_by_the_front_not_the_application(site_stack):
    """Apache's static handler, or the HTTP flavour's own: with validators, never the application."""
    r = get(site_stack, "/style.css")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/css")
    assert "ETag" in r.headers and "Last-Modified" in r.headers
    assert get(site_stack, "/style.css", headers={"If-None-Match": r.headers["ETag"]}).status_code == 304
    get(site_stack, "/?static-check")
    site_stack.backend.wait_for_log('application "GET /?static-check HTTP/1.1" 200')  # the access log, %R first
    assert not backend_saw(site_stack, 'application "GET /style.css')
    if site_stack.front == "http":  # the HTTP flavour logs the files it served itself
        site_stack.backend.wait_for_log('static "GET /style.css HTTP/1.1" 304 -')


def test_a_resumed_download_of_a_changed_file_is_refused_not_spliced(site_stack):
    """RFC 9110 13.1.1 and 13.1.4, as a download manager resumes: a range asked for under the
    first answer's ETag (If-Match) or date (If-Unmodified-Since) is a 412 once the file has
    changed, so no piece of the new file is joined onto the old one; If-Range gets it whole."""
    path = site_stack.site / "webroot" / "download.bin"
    path.write_bytes(b"a" * 1000)
    os.utime(path, (time.time() - 100,) * 2)
    first = get(site_stack, "/download.bin")
    etag, date = first.headers["ETag"], first.headers["Last-Modified"]
    for condition in ({"If-Match": etag}, {"If-Match": '"other", ' + etag}, {"If-Match": "*"},
                      {"If-Unmodified-Since": date}):
        piece = get(site_stack, "/download.bin", headers={"Range": "bytes=500-", **condition})
        assert piece.status_code == 206 and piece.content == b"a" * 500, condition
    assert get(site_stack, "/download.bin", headers={"If-Match": '"other"'}).status_code == 412

    path.write_bytes(b"b" * 1000)  # the same size, changed 50 s later
    os.utime(path, (time.time() - 50,) * 2)
    assert get(site_stack, "/download.bin", headers={"If-Unmodified-Since": date}).status_code == 412
    # (Apache 2.4 answers If-Unmodified-Since with a Range by the range, 206, from the new file)
    for condition in ({"If-Match": etag},) + (({"If-Unmodified-Since": date},) if site_stack.front == "http" else ()):
        refused = get(site_stack, "/download.bin", headers={"Range": "bytes=500-", **condition})
        assert refused.status_code == 412 and b"b" * 10 not in refused.content, condition
    whole = get(site_stack, "/download.bin", headers={"Range": "bytes=500-", "If-Range": etag})
    assert whole.status_code == 200 and whole.content == b"b" * 1000


def test_form_post_then_redirect_then_get(site_stack):
    browser = requests.Session()
    r = post_form(browser, site_stack.url + "/guestbook", {"name": "Lin", "message": "first <b>post</b>"},
                  allow_redirects=False)
    assert r.status_code == 303 and r.headers["Location"] == "/guestbook"
    page = browser.get(site_stack.url + "/guestbook", timeout=10)
    assert "<b>Lin</b>: first &lt;b&gt;post&lt;/b&gt;" in page.text
    assert (site_stack.site / "SQLiteDBs" / "guestbook.sqlite").is_file()


def test_handler_raising_http_error_gives_that_status(site_stack):
    r = post_form(requests.Session(), site_stack.url + "/guestbook", {"name": ""})
    assert r.status_code == 400 and "Both a name and a message are needed." in r.text
    r = get(site_stack, "/forbidden")
    assert r.status_code == 403 and "Not for you." in r.text


def test_response_object_sets_status_and_type(site_stack):
    r = get(site_stack, "/teapot")
    assert r.status_code == 418 and r.text == "short and stout"
    assert r.headers["Content-Type"] == "text/plain"


def test_unknown_url_is_a_404_page(site_stack):
    r = get(site_stack, "/no/such/page")
    assert r.status_code == 404 and "404 Not Found" in r.text


def test_method_not_allowed_names_the_allowed_ones(site_stack):
    r = get(site_stack, "/post-only")
    assert r.status_code == 405 and r.headers["Allow"] == "POST"


def test_handler_exception_is_a_500_without_traceback(site_stack):
    r = get(site_stack, "/boom")
    assert r.status_code == 500
    assert "Traceback" not in r.text and "secret-detail-in-traceback" not in r.text
    log = site_stack.backend.log_text()
    assert "GET /boom failed\nTraceback (most recent call last):\n" in log  # the traceback keeps its lines
    assert "ZeroDivisionError: secret-detail-in-traceback" in log


def test_template_naming_an_unregistered_handler_is_a_logged_500(site_stack):
    r = get(site_stack, "/orphan")
    assert r.status_code == 500 and "nobody_registered_this" not in r.text
    site_stack.backend.wait_for_log("names handler 'nobody_registered_this', which no handler module registered")


def test_route_with_missing_template_is_a_logged_500(site_stack):
    r = get(site_stack, "/page-with-missing-template")
    assert r.status_code == 500
    site_stack.backend.wait_for_log("names template 'no-such.mustache'")


def test_a_line_break_put_into_a_header_is_a_500_not_a_header_of_the_visitors(site_stack):
    """Response splitting: ?next= ending the Location header and adding a Set-Cookie of its own."""
    assert get(site_stack, "/redirect-to?next=/fine").headers["Location"] == "/fine"
    r = get(site_stack, "/redirect-to?next=/x%0d%0aSet-Cookie:%20evil=1")
    assert r.status_code == 500 and "Set-Cookie" not in r.headers and "evil" not in r.text
    site_stack.backend.wait_for_log("InvalidResponseHead: the header 'Location': '/x\\r\\nSet-Cookie: evil=1' has a "
                                    "line break, NUL or other control character in it")
    assert get(site_stack, "/redirect-to?next=/x%1b%5b31m").status_code == 500  # any control character but a tab
    assert get(site_stack, "/redirect-to?next=/after").status_code == 302  # the worker goes on


def test_the_example_upload_page_keeps_both_of_two_files_of_one_name(site_stack):
    """Two visitors send notes.txt: the second is stored as notes-2.txt, the first is still there."""
    stored = []
    for content in (b"first visitor", b"second visitor"):
        r = requests.post(site_stack.url + "/upload-demo", files={"file": ("notes.txt", content, "text/plain")},
                          timeout=10)
        assert r.status_code == 200, r.text
        stored += re.findall(r"Stored (\S+) \(", r.text)
    assert stored == ["notes.txt", "notes-2.txt"]
    folder = site_stack.site / "SQLiteDBs" / "uploads"
    assert (folder / "notes.txt").read_bytes() == b"first visitor"
    assert (folder / "notes-2.txt").read_bytes() == b"second visitor"


def test_request_details_reach_the_handler(site_stack):
    r = requests.post(site_stack.url + "/echo?x=1&x=2", data={"f": "v"}, timeout=10,
                      headers={"X-Custom": "hello", "Authorization": "Bearer t0ken"},
                      cookies={"session": "abc"})
    got = r.json()
    assert got["method"] == "POST" and got["path"] == "/echo"
    assert got["query"] == {"x": ["1", "2"]} and got["form"] == {"f": ["v"]}
    assert got["x_custom"] == "hello" and got["authorization"] == "Bearer t0ken"
    assert got["cookies"] == {"session": "abc"}


def test_utf8_and_percent_encoded_paths(site_stack):
    r = get(site_stack, "/hello/J%C3%BCrgen%20M")
    assert r.status_code == 200 and "Hello, Jürgen M!" in r.text


def test_cookies_are_set(site_stack):
    r = get(site_stack, "/cookie")
    assert r.cookies.get("visited") == "yes"
    assert "HttpOnly" in r.headers["Set-Cookie"]


def test_json_and_raw_bodies(site_stack):
    r = requests.put(site_stack.url + "/echo", data=b"\x00\x01raw" * 1000,
                     headers={"Content-Type": "application/octet-stream"}, timeout=10)
    assert r.json()["body_length"] == 5000 and r.json()["content_type"] == "application/octet-stream"


def test_a_form_of_millions_of_fields_is_a_413_and_the_worker_goes_on(site_stack):
    """An urlencoded body is read into memory (16 MiB at most), but its fields were not counted:
    16 MiB of "a=&" was five million of them, 6 s of a worker's CPU and about a gigabyte, for any
    visitor posting to any page with a form. --max-parts (1000) now bounds them as it bounds a
    multipart body's parts; a form at the bound passes."""
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    at_bound = requests.post(site_stack.url + "/echo", data="&".join(f"f{n}=v" for n in range(1000)),
                             headers=form, timeout=30)
    assert at_bound.status_code == 200 and len(at_bound.json()["form"]) == 1000
    flood = requests.post(site_stack.url + "/echo", data=b"a=&" * (16 * 1024 ** 2 // 3 - 1), headers=form, timeout=60)
    assert flood.status_code == 413 and "more fields than the limit allows" in flood.text
    assert get(site_stack, "/echo").status_code == 200


def test_json_nested_too_deeply_is_a_400_that_says_so(site_stack):
    """json.loads raises RecursionError, not ValueError, for "[[[[...": it was a 500."""
    r = requests.post(site_stack.url + "/echo-json", data="[" * 100_000, timeout=10,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "nested too deeply" in r.text
    ok = requests.post(site_stack.url + "/echo-json", json=[[1], {"a": [2]}], timeout=10)
    assert ok.status_code == 200 and ok.json() == {"got": [[1], {"a": [2]}]}


@pytest.mark.parametrize("path", [
    "/../handlers/pages.py", "/%2e%2e/handlers/pages", "/..%2fhandlers%2fpages",
    "/%2e%2e/%2e%2e/etc/passwd", "/hello/..%2f..%2f..%2fetc%2fpasswd", "/..%2f..%2fetc%2fpasswd.mustache",
])
def test_paths_never_reach_outside_the_webroot(site_stack, path):
    conn = http.client.HTTPConnection("127.0.0.1", site_stack.port, timeout=10)
    conn.request("GET", path)  # sent as written, not normalised by a client library
    r = conn.getresponse()
    body = r.read().decode(errors="replace")
    conn.close()
    assert r.status in (400, 404)
    assert "init_module" not in body and "root:x:0" not in body


def test_a_changed_template_is_served_without_restart(site_stack):
    path = site_stack.site / "webroot" / "changing.mustache"
    path.write_text("version one")
    assert get(site_stack, "/changing").text == "version one"
    path.write_text("version two {{x}}")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10_000_000))
    assert get(site_stack, "/changing").text == "version two "


def test_debug_mode_shows_the_traceback(debug_site_stack):
    r = get(debug_site_stack, "/boom")
    assert r.status_code == 500
    assert "Traceback" in r.text and "secret-detail-in-traceback" in r.text


def test_many_requests_in_a_row_all_succeed(site_stack):
    with requests.Session() as session:
        for i in range(200):
            r = session.get(f"{site_stack.url}/hello/n{i}", timeout=10)
            assert r.status_code == 200 and f"Hello, n{i}!" in r.text


def test_a_site_path_with_capital_letters_reaches_routes_and_pages(workdir):
    """Apache must not lowercase the socket path on the way to the backend."""
    root = workdir / "Sites" / "MyShop"
    root.mkdir(parents=True)
    (workdir / "Sites").chmod(0o755)
    root.chmod(0o755)
    s = Stack(root)
    try:
        assert "<h1>About</h1>" in get(s, "/about").text
        assert get(s, "/hello/Caps").status_code == 200
        assert get(s, "/api/time").status_code == 200
    finally:
        s.stop()
