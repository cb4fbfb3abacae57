"""Stock flup's preforking FastCGI server with the WSGI hello.   python flup_prefork_hello.py SOCKET WORKERS"""

import sys

from flup.server.fcgi_fork import WSGIServer

from hello_wsgi import hello

if __name__ == "__main__":
    workers = int(sys.argv[2])
    WSGIServer(hello, bindAddress=sys.argv[1], umask=0o117,
               minSpare=workers, maxSpare=workers, maxChildren=workers).run()
