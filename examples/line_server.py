"""Net::Waiter's SYNOPSIS in Python: a line-protocol TCP server, preforked.

    python examples/line_server.py 9123        # then: nc 127.0.0.1 9123
"""

import sys

from fcgi_backend import Waiter


class MyWaiter(Waiter):
    def on_accept_ok(self, client):
        print(f"client connected from {client.getpeername()[0]}", flush=True)

    def on_process(self, client):
        client.sendall(b"hello world\n")
        for line in client.makefile("rb"):  # answer each line until "quit"
            if line.strip() == b"quit":
                break
            client.sendall(b"you said: " + line)


if __name__ == "__main__":
    server = MyWaiter(port=int(sys.argv[1]) if len(sys.argv) > 1 else 9123, prefork=2)
    result = server.run()
    print(f"waiter result: {result}")  # 0 is ok, >0 is error
    sys.exit(result)
