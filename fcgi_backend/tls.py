"""TLS on the listener (Net::Waiter's SSL option), with Python's ssl module.

The supervisor builds the context (and again on SIGHUP, so renewed certificates are picked up);
each worker runs the handshake of the connections it accepts, with a deadline.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass

# Net::Waiter passes IO::Socket::SSL's SSL_verify_mode through: 0 none, 1 verify a certificate the
# client sends, 1|2 also require one. Names are accepted too.
VERIFY_MODES = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED,
                "0": ssl.CERT_NONE, "1": ssl.CERT_OPTIONAL, "3": ssl.CERT_REQUIRED}


class TLSError(Exception):
    """The TLS settings cannot work; the message names the file or setting."""


@dataclass(frozen=True)
class TLSConfig:
    """Certificate and key of the server, and how client certificates are checked."""

    cert_file: str
    key_file: str | None = None      #: None: the key is in cert_file
    ca_file: str | None = None       #: CAs that client certificates must chain to
    verify_mode: str = "none"        #: none, optional or required (Net::Waiter's 0, 1, 3)
    handshake_timeout: float = 10.0  #: seconds a client gets to finish the handshake

    def check(self) -> None:
        """TLSError naming what cannot work."""
        mode = str(self.verify_mode).lower()
        if mode not in VERIFY_MODES:
            raise TLSError(f"TLS verify mode {self.verify_mode!r} is not one of none, optional, required")
        if VERIFY_MODES[mode] != ssl.CERT_NONE and not self.ca_file:
            raise TLSError(f"TLS verify mode {mode} needs a CA file (--tls-ca) to check client certificates with")
        for what, path in (("certificate", self.cert_file), ("key", self.key_file), ("CA file", self.ca_file)):
            if path and not os.access(path, os.R_OK):
                raise TLSError(f"TLS {what} {path} does not exist or cannot be read")
        if self.handshake_timeout <= 0:
            raise TLSError("TLS handshake timeout must be more than 0 seconds")

    def context(self) -> ssl.SSLContext:
        """A server context from the files as they are now; TLSError if they do not load."""
        self.check()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(self.cert_file, self.key_file)
            if self.ca_file:
                ctx.load_verify_locations(self.ca_file)
        except (ssl.SSLError, OSError) as exc:
            raise TLSError(self._pem_problem() or f"TLS certificate {self.cert_file} (key {self.key_file or 'in it'}) "
                                                  f"does not load: {exc}") from None
        ctx.verify_mode = VERIFY_MODES[str(self.verify_mode).lower()]
        return ctx

    def _pem_problem(self) -> str | None:
        """What the files plainly lack, said as an operator would fix it (OpenSSL says "PEM lib")."""
        try:
            with open(self.cert_file, "rb") as cert:
                text = cert.read(1 << 20)
        except OSError:
            return None
        if b"-----BEGIN CERTIFICATE-----" not in text:
            return f"TLS certificate {self.cert_file} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        if not self.key_file and b"PRIVATE KEY-----" not in text:
            return (f"TLS certificate {self.cert_file} holds no private key: give the key's file with --tls-key "
                    f"(key_file in [tls])")
        return None


def peer_environ(sock: ssl.SSLSocket, verify_mode: int) -> dict[str, str]:
    """What Apache's mod_ssl tells an application about the connection: HTTPS, the protocol and
    cipher, and the client certificate's subject and whether it was verified."""
    environ = {"HTTPS": "on", "SSL_PROTOCOL": sock.version() or "", "SSL_CIPHER": (sock.cipher() or ("",))[0]}
    cert = sock.getpeercert()
    if cert:
        environ["SSL_CLIENT_S_DN"] = distinguished_name(cert.get("subject", ()))
        environ["SSL_CLIENT_I_DN"] = distinguished_name(cert.get("issuer", ()))
        environ["SSL_CLIENT_VERIFY"] = "SUCCESS"  # a certificate that does not verify fails the handshake
    else:
        environ["SSL_CLIENT_VERIFY"] = "NONE"
    return environ


def distinguished_name(rdns) -> str:
    """An RFC 4514 string (most specific first, as mod_ssl's SSL_CLIENT_S_DN with
    SSLOptions +LegacyDNStringFormat off) from getpeercert()'s nested tuples."""
    short = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU", "countryName": "C",
             "stateOrProvinceName": "ST", "localityName": "L", "emailAddress": "emailAddress",
             "domainComponent": "DC"}
    parts = []
    for rdn in reversed(rdns):
        parts.append("+".join(f"{short.get(key, key)}={_escape_dn(value)}" for key, value in rdn))
    return ",".join(parts)


def _escape_dn(value: str) -> str:
    escaped = "".join("\\" + c if c in ',+"\\<>;=' else c for c in value)
    if escaped.startswith(("#", " ")):
        escaped = "\\" + escaped
    if escaped.endswith(" "):
        escaped = escaped[:-1] + "\\ "
    return escaped
