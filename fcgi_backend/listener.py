"""Creating the listen socket: a unix socket (the site's, or any path) or a TCP address; what a
failed accept on it means."""

from __future__ import annotations

import errno
import grp
import ipaddress
import logging
import os
import pwd
import resource
import socket
import stat
import struct
from dataclasses import dataclass

log = logging.getLogger("fcgi_backend.listener")

DEFAULT_SOCKET_MODE = 0o660
UNIX_PATH_MAX = 107  # sockaddr_un's 108 bytes, less the NUL that Apache's connect needs
BACKLOG = 1024
# Where the client speaks first (HTTP, TLS, FastCGI), the kernel may hold a new TCP connection until
# its first bytes come (TCP_DEFER_ACCEPT, as Apache's default AcceptFilter on Linux, and as long):
# one that sends nothing then holds no worker while clients with a request wait behind it.
DEFER_ACCEPT_SECONDS = 30
# accept's errors that say the process or the system is out of descriptors or memory: accepting
# again at once fails again (a busy loop, a log line each time), so it waits this long first, as
# nginx's accept does.
ACCEPT_PAUSE = 0.5
_OUT_OF_ROOM = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class ListenError(Exception):
    """The listen socket cannot be created; the message says why (exit code 100)."""


@dataclass(frozen=True)
class ListenAddress:
    """Where the server listens: ``path`` for a unix socket, else ``host`` and ``port``."""

    path: str | None = None
    host: str | None = None
    port: int | None = None

    @classmethod
    def parse_tcp(cls, text: str, setting: str = "") -> "ListenAddress":
        """``HOST:PORT`` (``[::1]:9000`` for IPv6) as an address; ValueError with a clear message if
        not, beginning with ``setting`` (where the text came from) when given."""
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            where = f"{setting}: " if setting else ""
            raise ValueError(f"{where}expected HOST:PORT (for example 127.0.0.1:9000), got {text!r}")
        return cls(host=host.strip("[]"), port=int(port))

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.path else f"tcp:{self.host}:{self.port}"

    @property
    def reachable_from_elsewhere(self) -> bool:
        """A TCP address other hosts may connect to (not loopback, not a unix socket)."""
        if self.path:
            return False
        try:
            return not ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host != "localhost"


def _owner(st: os.stat_result) -> str:
    try:
        return pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        return f"uid {st.st_uid}"


def _unix_socket_is_live(path: str) -> bool:
    """True if a server answers on ``path``; False only if nobody listens there (ECONNREFUSED).

    Any other failure to connect (EACCES: another user's socket) is a ListenError: such a socket
    may well be live, and replacing it would take over someone else's server.
    """
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
        return True
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except (BlockingIOError, TimeoutError):
        return True  # the live server's backlog is full
    except OSError as exc:
        try:
            owner = _owner(os.lstat(path))
        except OSError:
            owner = "another user"
        raise ListenError(f"{path} belongs to {owner} and cannot be probed ({exc.strerror}): another "
                          f"server may be listening there; refusing to replace it") from None
    finally:
        probe.close()


def _prepare_unix_path(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ListenError(f"{path} exists and is not a socket; refusing to replace it")
    if _unix_socket_is_live(path):
        raise ListenError(f"another server is already listening on {path}")
    log.info("replacing stale socket %s", path)
    try:
        os.unlink(path)
    except OSError as exc:
        raise ListenError(f"cannot replace stale socket {path} (owned by {_owner(st)}): {exc.strerror}") from None


def bind_unix(path: str, mode: int = DEFAULT_SOCKET_MODE, group: str | None = None) -> socket.socket:
    """Bind and listen on a unix socket with the given mode and group.

    A stale socket file (nobody answers) is replaced; a live one is a ListenError. The umask keeps
    the socket from ever being more open than ``mode`` between bind and chmod.
    """
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ListenError(f"cannot create socket {path}: directory {directory} does not exist")
    size = len(os.fsencode(path))
    if size > UNIX_PATH_MAX:  # (bind's own error says only "AF_UNIX path too long", without errno text)
        raise ListenError(f"cannot create socket {path}: the path is {size} bytes, and a unix socket's path can be "
                          f"at most {UNIX_PATH_MAX}; give a shorter one with --socket (Apache's config names it too)")
    gid = None
    if group is not None:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise ListenError(f"cannot give socket {path} to group {group!r}: no such group") from None
    _prepare_unix_path(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o777 & ~mode)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot create socket {path}: {exc.strerror or exc}") from None
    finally:
        os.umask(old_umask)
    try:
        if gid is not None:
            os.chown(path, -1, gid)
        os.chmod(path, mode)
    except OSError as exc:
        sock.close()
        os.unlink(path)
        raise ListenError(f"cannot set owner or mode of socket {path}: {exc.strerror}") from None
    sock.listen(BACKLOG)
    return sock


def bind_tcp(host: str, port: int, defer_accept: bool = False) -> socket.socket:
    """Bind and listen on a TCP address; an address in use is a ListenError. ``defer_accept``:
    a connection is accepted once its first bytes have come (DEFER_ACCEPT_SECONDS)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ListenError(f"cannot resolve {host}: {exc}") from None
    family, _, _, _, sockaddr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if defer_accept and hasattr(socket, "TCP_DEFER_ACCEPT"):  # (Linux's)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, DEFER_ACCEPT_SECONDS)
    try:
        sock.bind(sockaddr)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(BACKLOG)
    return sock


def open_listener(address: ListenAddress, mode: int = DEFAULT_SOCKET_MODE,
                  group: str | None = None, defer_accept: bool = False) -> socket.socket:
    """The listen socket for ``address`` (``defer_accept``: bind_tcp's)."""
    if address.path:
        return bind_unix(address.path, mode, group)
    return bind_tcp(address.host, address.port, defer_accept)


def file_id(path: str) -> tuple[int, int] | None:
    """(device, inode) of the file at ``path``: which socket file it is (None if there is none)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def remove_unix_socket(sock: socket.socket, path: str) -> None:
    """Close the listen socket and remove its file, unless another live server has since taken the path."""
    sock.close()
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode) and not _unix_socket_is_live(path):
            os.unlink(path)
    except (OSError, ListenError):
        pass


# ---- the listen queue (connections waiting for accept), for the status page --------------------

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 1
_TCP_LISTEN = 10
_UDIAG_SHOW_RQLEN = 0x10
_UNIX_DIAG_RQLEN = 4
_NLMSG_HEADER = struct.Struct("=IHHII")
_UNIX_DIAG_REQ = struct.Struct("=BBHIIIII")
_UNIX_DIAG_MSG = struct.Struct("=BBBBIII")


def listen_queue_length(sock: socket.socket) -> int | None:
    """How many connections wait in ``sock``'s backlog, or None where the system does not tell."""
    try:
        if sock.family == socket.AF_UNIX:
            return _unix_backlog(os.fstat(sock.fileno()).st_ino)
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        return struct.unpack_from("=I", info, 24)[0]  # tcpi_unacked: the accept queue of a listener
    except (OSError, struct.error):
        return None


def _unix_backlog(inode: int) -> int | None:
    """UNIX_DIAG_RQLEN of the listening unix socket with this inode (what `ss -xl` shows)."""
    request = _UNIX_DIAG_REQ.pack(socket.AF_UNIX, 0, 0, 1 << _TCP_LISTEN, inode, _UDIAG_SHOW_RQLEN,
                                  0xFFFFFFFF, 0xFFFFFFFF)
    header = _NLMSG_HEADER.pack(_NLMSG_HEADER.size + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, 1, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(1.0)
        nl.send(header + request)
        reply = nl.recv(8192)
    length, msg_type, _, _, _ = _NLMSG_HEADER.unpack_from(reply, 0)
    if msg_type != _SOCK_DIAG_BY_FAMILY:
        return None
    pos = _NLMSG_HEADER.size + _UNIX_DIAG_MSG.size
    while pos + 4 <= length:  # netlink attributes: u16 length, u16 type, payload, aligned to 4
        attr_len, attr_type = struct.unpack_from("=HH", reply, pos)
        if attr_len < 4:
            break
        if attr_type == _UNIX_DIAG_RQLEN:
            return struct.unpack_from("=I", reply, pos + 4)[0]
        pos += (attr_len + 3) & ~3
    return None


def accept_failure(exc: OSError) -> tuple[str, float]:
    """What a failed accept says in the log, and how long to wait before the next one (0: at once)."""
    if exc.errno not in _OUT_OF_ROOM:
        return f"accept failed: {exc}", 0.0
    if exc.errno == errno.EMFILE:  # (nothing more can be opened to count them: that is the error)
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return f"accept failed: {exc} (the {limit} descriptors its open-files limit allows are open)", ACCEPT_PAUSE
    return f"accept failed: {exc}", ACCEPT_PAUSE
