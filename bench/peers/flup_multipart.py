"""Stock flup serving the WSGI app that parses uploads with python-multipart (multipart_wsgi.py).

    python flup_multipart.py SOCKET_PATH UPLOAD_DIR
"""

import sys

from flup.server.fcgi_single import WSGIServer
from multipart_wsgi import make_app

if __name__ == "__main__":
    WSGIServer(make_app(sys.argv[2]), bindAddress=sys.argv[1], umask=0o117).run()
