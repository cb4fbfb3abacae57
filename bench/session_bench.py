"""What a session costs: requests/s of a page that reads and writes its visitor's session (a
counter) against the same page without one, through Apache's mod_proxy_fcgi, for two kinds of
page (a bare text answer and a small mustache page; PHP pages that print the same), side by side:

  * fcgi_backend, sessions in SQLite (the default: SITE/SQLiteDBs/sessions.sqlite3);
  * fcgi_backend, sessions in PostgreSQL (a server started for the run, on a unix socket);
  * php-fpm with PHP's file sessions (session_start() and $_SESSION), pm = static.

Each server runs the same number of workers behind the same Apache. The load comes from wrk with a
pool of visitors made beforehand (one cookie each, taken in turn, so that two requests in flight
rarely belong to one visitor); the page without a session is sent the same cookies. Rounds are
interleaved and the tables give medians.

PostgreSQL runs with synchronous_commit off, as SQLite's WAL mode with synchronous=NORMAL and
PHP's files do not wait for the disk at each request either.

    python bench/session_bench.py [--runs 3] [--duration 4] [--workers 4] [--visitors 512] [--json FILE]
"""

from __future__ import annotations

import shutil
import statistics
import sys
from pathlib import Path

import requests

from benchlib import (in_turn, behind_apache, bench_arguments, write_json, AS_USER, APACHE_USER, BENCH, PHP_FPM, Peer, bench_site, make_reachable_dir,
                      php_fpm_config, running_as_root, wrk)
from postgres_harness import Postgres, available as postgres_available

CONCURRENCY = [1, 16, 64]


def make_visitors(url: str, cookie_name: str, count: int) -> list[str]:
    """``count`` visitors of ``url``, each with the session cookie its first visit set."""
    cookies = []
    with requests.Session() as http:
        for _ in range(count):
            http.cookies.clear()
            response = http.get(url, timeout=30)
            if response.status_code != 200 or cookie_name not in response.cookies:
                raise RuntimeError(f"{url}: no {cookie_name} cookie ({response.status_code}: {response.text[:200]!r})")
            cookies.append(f"{cookie_name}={response.cookies[cookie_name]}")
    return cookies


def visitors_script(folder: Path, name: str, cookies: list[str]) -> Path:
    """A wrk script sending the cookies in turn; wrk's two threads take the even and the odd ones."""
    script = folder / f"{name}.lua"
    listed = ",\n".join(f'  "{cookie}"' for cookie in cookies)
    script.write_text(f"""cookies = {{
{listed}
}}
local threads, sent = 0, 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
function request()
  sent = sent + 1
  return wrk.format(nil, nil, {{["Cookie"] = cookies[((sent * 2 + tid) % #cookies) + 1]}})
end
""")
    return script


# What the pages are: a bare text answer (the harshest case: nothing but the session to do) and
# a small HTML page rendered from a template (what a site's page is).
KINDS = {"text": "bare text answer", "page": "mustache page"}


def main() -> int:
    parser = bench_arguments(__doc__, duration=4, workers=4, concurrency=CONCURRENCY)
    parser.add_argument("--visitors", type=int, default=512)
    args = parser.parse_args()

    root, site = bench_site("fcgi-bench-sessions-")
    for page in ("session_counter.php", "no_session_counter.php", "page.php", "page-no-session.php"):
        shutil.copy(BENCH / "peers" / page, site / "webroot" / page)
    run = root / "run"
    sock = site / "fcgi_backend.sock"
    php_sessions = run / "php-sessions"
    php_sessions.mkdir()
    if running_as_root():
        shutil.chown(php_sessions, APACHE_USER, APACHE_USER)
    postgres = None
    if postgres_available():
        postgres = Postgres(make_reachable_dir("fcgi-bench-pg-")).start()
    python = sys.executable
    ours = [python, "-m", "fcgi_backend", "run", str(site), "--prefork", str(-args.workers),
            *AS_USER]
    our_pages = {"text": ("/visit", "/visit-no-session"), "page": ("/page", "/page-no-session")}
    php_pages = {"text": ("/session_counter.php", "/no_session_counter.php"),
                 "page": ("/page.php", "/page-no-session.php")}
    php_stanza = f'<FilesMatch "\\.php$">\n    SetHandler "proxy:unix:{sock}|fcgi://localhost"\n</FilesMatch>'
    php = [PHP_FPM, "-n", "-y", str(php_fpm_config(run, sock, args.workers, {
        "session.save_path": str(php_sessions), "session.gc_probability": "1", "session.gc_divisor": "1000"}))]
    # (server, peer, {kind: (page with a session, the same without)}, cookie name, extra Apache config)
    servers = [("fcgi_backend, SQLite", Peer("ours-sqlite", ours, sock, run / "ours-sqlite.log"),
                our_pages, "fcgi_session", "")]
    if postgres is not None:
        servers.append(("fcgi_backend, PostgreSQL", Peer("ours-pg", [*ours, "--sessions", postgres.url], sock,
                                                         run / "ours-pg.log"), our_pages, "fcgi_session", ""))
    servers.append(("php-fpm, file sessions", Peer("php-fpm", php, sock, run / "php.log"), php_pages, "PHPSESSID",
                    php_stanza))
    samples: dict[tuple[str, str, str, int], list] = {}
    scripts: dict[str, Path] = {}
    try:
        for round_no in range(args.runs):
            for name, peer, pages, cookie_name, extra in in_turn(servers, round_no):
                with behind_apache(site, run, peer, extra) as apache:
                    if name not in scripts:
                        scripts[name] = visitors_script(run, peer.name, make_visitors(
                            apache.url + pages["page"][0], cookie_name, args.visitors))
                    for kind, paths in pages.items():
                        for path in paths:
                            wrk(apache.url + path, 4, 1, script=scripts[name])  # warm up
                        for c in args.concurrency:  # with and without, back to back: the fairest pair
                            for session, path in zip(("session", "none"), paths):
                                result = wrk(apache.url + path, c, args.duration, script=scripts[name])
                                samples.setdefault((name, kind, session, c), []).append(result)
                                print(f"round {round_no + 1} {name} {kind} {session} c={c}: {result.rps:.0f} req/s "
                                      f"p50 {result.p50_ms:.2f} ms p99 {result.p99_ms:.2f} ms errors {result.errors}",
                                      flush=True)
    finally:
        if postgres is not None:
            postgres.stop()
            shutil.rmtree(postgres.folder, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)

    rps = {key: statistics.median(r.rps for r in rows) for key, rows in samples.items()}
    errors = {key: sum(r.errors for r in rows) for key, rows in samples.items()}
    names = [s[0] for s in servers]
    php_name = names[-1]
    for kind, title in KINDS.items():
        print(f"\n{title}: requests/s with a session / without, and what the session costs "
              f"(median of {args.runs} runs of {args.duration} s, {args.workers} workers each, "
              f"{args.visitors} visitors)\n")
        print("| clients | " + " | ".join(names) + " |")
        print("|---|" + "---|" * len(names))
        for c in args.concurrency:
            cells = []
            for n in names:
                with_, without = rps[(n, kind, "session", c)], rps[(n, kind, "none", c)]
                cells.append(f"{with_:.0f} / {without:.0f} ({with_ / without - 1:+.0%})")
            print(f"| {c} | " + " | ".join(cells) + " |")
        print(f"\n{title} with a session, ours / php-fpm's, same run:\n")
        print("| clients | " + " | ".join(f"{n} / php-fpm" for n in names[:-1]) + " |")
        print("|---|" + "---|" * (len(names) - 1))
        for c in args.concurrency:
            print(f"| {c} | " + " | ".join(f"{rps[(n, kind, 'session', c)] / rps[(php_name, kind, 'session', c)]:.2f}x"
                                           for n in names[:-1]) + " |")
    if any(errors.values()):
        print("\nerrors: " + ", ".join(f"{' '.join(map(str, k))}: {v}" for k, v in errors.items() if v))
    write_json(args.json, {"runs": args.runs, "duration": args.duration, "workers": args.workers,
                       "visitors": args.visitors,
                       "results": [{"server": n, "page": kind, "session": session == "session", "clients": c,
                                    "rps": rps[(n, kind, session, c)], "errors": errors[(n, kind, session, c)]}
                                   for (n, kind, session, c) in rps]})
    return 1 if any(errors.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
