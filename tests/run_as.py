"""Run ``fcgi-backend`` as another user, for tests that need one: ``run_as.py USER ARGS...``.

The interpreter of the test virtualenv may sit in a folder only root can enter, so this starts as
root, imports what start-up needs, then gives up root for good before calling the command.
"""

import os
import pwd
import sys

import locale  # noqa: F401 (imported while still root, as is all below)
import json  # noqa: F401 (the example site's handlers import these)
import hashlib  # noqa: F401
import sqlite3  # noqa: F401
import time  # noqa: F401
import logging.handlers  # noqa: F401

import fcgi_backend.cli as cli
import fcgi_backend.fastcgi_server  # noqa: F401
import fcgi_backend.session_stores  # noqa: F401

cli.build_parser().format_help()  # argparse's messages load gettext's catalogues lazily

user = pwd.getpwnam(sys.argv[1])
os.setgroups([])
os.setgid(user.pw_gid)
os.setuid(user.pw_uid)
sys.exit(cli.main(sys.argv[2:]))
