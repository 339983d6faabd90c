"""The ``listen``, ``listen_tls`` and ``radius`` sections: where the daemon answers (UDP and
RadSec), and how it paces requests."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from radmfa.config.load import Section, required

__all__ = [
    "DEFAULT_LISTEN",
    "LISTEN_TLS_KEYS",
    "RADIUS_KEYS",
    "RADSEC_PORT",
    "ListenAddress",
    "RadiusConfig",
    "TlsListener",
    "check_tls_files",
    "parse_listen",
    "parse_listen_address",
    "parse_listen_tls",
    "parse_radius",
]


@dataclass(frozen=True)
class ListenAddress:
    host: str  # "127.0.0.1", "::1", "0.0.0.0", "::"
    port: int


@dataclass(frozen=True)
class RadiusConfig:
    #: Floor on how soon an Access-Reject leaves (FreeRADIUS reject_delay); hides which check
    #: failed and slows guessing. 0 disables.
    reject_delay: float = 1.0
    #: How long answered requests stay in the duplicate cache (RFC 5080: 5-30 s).
    duplicate_window: float = 30.0
    #: Requests being processed at once; beyond this new requests are dropped so clients retry.
    max_in_flight: int = 2048
    #: Deadline for one request; past it the request is rejected (kept under client timers).
    request_timeout: float = 10.0
    #: Processes sharing the listen sockets (SO_REUSEPORT); the kernel keeps each client
    #: source port on one worker, so retransmissions meet their duplicate cache.
    workers: int = 1


# -- listen ----------------------------------------------------------------------------------


DEFAULT_LISTEN = (ListenAddress("127.0.0.1", 1812),)
_LISTEN_EXAMPLE = 'write host:port with an IP address, e.g. "127.0.0.1:1812" or "[::1]:1812"'


def parse_listen_address(text: str) -> ListenAddress:
    """``"127.0.0.1:1812"`` or ``"[::1]:1812"`` -> ListenAddress; ValueError says what is wrong."""
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ValueError(f"{text!r} is not host:port; {_LISTEN_EXAMPLE}")
        port, version = rest[1:], 6
    else:
        host, colon, port = text.rpartition(":")
        if not colon:
            raise ValueError(f"{text!r} is not host:port; {_LISTEN_EXAMPLE}")
        if ":" in host:
            raise ValueError(f'put an IPv6 address in brackets: "[{host}]:{port}"')
        version = 4
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"{host!r} is not an IP address (host names are not looked up); {_LISTEN_EXAMPLE}"
        ) from None
    if ip.version != version:
        raise ValueError(f"only IPv6 addresses go in brackets; {_LISTEN_EXAMPLE}")
    if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        raise ValueError(f"port {port!r} must be a number from 1 to 65535")
    return ListenAddress(str(ip), int(port))


def parse_listen(root: Section) -> tuple[ListenAddress, ...]:
    value = root.get("listen")
    if value is None:
        return DEFAULT_LISTEN
    items = value.as_list()
    if items is None:
        return DEFAULT_LISTEN
    if not items:
        value.error(f"list at least one address to listen on; {_LISTEN_EXAMPLE}")
    taken: dict[ListenAddress, str] = {}
    for item in items:
        text = item.text()
        if text is None:
            continue
        try:
            address = parse_listen_address(text)
        except ValueError as exc:
            item.error(str(exc))
            continue
        clash = _listen_clash(address, taken)
        if clash is not None:
            item.error(clash)
            continue
        taken[address] = item.path
    return tuple(taken)


def _listen_clash(address: ListenAddress, taken: dict[ListenAddress, str]) -> str | None:
    """Why binding ``address`` after ``taken`` would fail, if it would."""
    if address in taken:
        return f"listed twice (also {taken[address]})"
    ip = ipaddress.ip_address(address.host)
    for other, path in taken.items():
        other_ip = ipaddress.ip_address(other.host)
        if other.port != address.port or other_ip.version != ip.version:
            continue
        if ip.is_unspecified or other_ip.is_unspecified:
            wildcard = address.host if ip.is_unspecified else other.host
            return (
                f"overlaps {path}: {wildcard} already means every address, "
                "so the second bind would fail; keep one of them"
            )
    return None


# -- radius ----------------------------------------------------------------------------------


RADIUS_KEYS = ("reject_delay", "duplicate_window", "max_in_flight", "request_timeout", "workers")


def parse_radius(s: Section) -> RadiusConfig:
    d = RadiusConfig()
    radius = RadiusConfig(
        # pam_radius waits 3 s per try by default: an Access-Reject must leave before that.
        reject_delay=s.get_duration("reject_delay", d.reject_delay, 0, 2.5),
        # RFC 5080 section 2.2.2: keep answered requests 5 to 30 seconds.
        duplicate_window=s.get_duration("duplicate_window", d.duplicate_window, 5, 30),
        max_in_flight=s.get_int("max_in_flight", d.max_in_flight, 1, 1_000_000),
        request_timeout=s.get_duration("request_timeout", d.request_timeout, 1, 60),
        workers=s.get_int("workers", d.workers, 1, 64),
    )
    if radius.request_timeout <= radius.reject_delay:
        s.error("request_timeout", "must be longer than reject_delay")
    return radius


# -- listen_tls ------------------------------------------------------------------------------


#: RFC 6614 section 2.1: RadSec's registered port.
RADSEC_PORT = 2083
LISTEN_TLS_KEYS = (
    "address",
    "port",
    "cert_file",
    "key_file",
    "ca_file",
    "tls13_only",
    "handshake_timeout",
    "idle_timeout",
    "max_connections_per_client",
)


@dataclass(frozen=True)
class TlsListener:
    """One RadSec listening socket (RFC 6614): TLS on TCP, clients known by certificate."""

    host: str
    port: int
    #: PEM: the server certificate, then any intermediates.
    cert_file: str
    key_file: str
    #: PEM: the CA certificates a client certificate must chain to.
    ca_file: str
    #: Refuse TLS 1.2 (the floor otherwise).
    tls13_only: bool = False
    #: A connection that has not finished its handshake by then is closed.
    handshake_timeout: float = 5.0
    #: A connection with no whole packet received and nothing in flight for this long is closed.
    idle_timeout: float = 120.0
    #: Connections one client entry may hold open at once; more are closed after the handshake.
    max_connections_per_client: int = 16


def parse_listen_tls(root: Section) -> tuple[TlsListener, ...]:
    """``listen_tls``: a list of RadSec listeners; files are checked (and parsed) here, so
    ``check-config`` finds a wrong path or a key that does not match its certificate."""
    value = root.get("listen_tls")
    items = value.as_list() if value is not None else None
    if not items:
        return ()
    listeners: list[TlsListener] = []
    taken: dict[ListenAddress, str] = {}
    for item in items:
        s = item.as_section(LISTEN_TLS_KEYS)
        if s is None:
            continue
        listener = _tls_listener(s)
        if listener is None:
            continue
        address = ListenAddress(listener.host, listener.port)
        clash = _listen_clash(address, taken)
        if clash is not None:
            s.error("port", clash)
            continue
        taken[address] = s.path
        listeners.append(listener)
    return tuple(listeners)


def _tls_listener(s: Section) -> TlsListener | None:
    d = TlsListener("", 0, "", "", "")
    host_value = required(s, "address", 'give the IP address to listen on, e.g. "0.0.0.0"')
    host_text = host_value.as_str() if host_value is not None else None
    host: str | None = None
    if host_value is not None and host_text is not None:
        try:
            host = str(ipaddress.ip_address(host_text.strip().strip("[]")))
        except ValueError:
            host_value.error(
                f"{host_text!r} is not an IP address (host names are not looked up); "
                'e.g. "0.0.0.0", "::" or "192.0.2.1"'
            )
    port = s.get_int("port", RADSEC_PORT, 1, 65535)
    cert_file = _pem_path(s, "cert_file", "the server certificate (PEM, intermediates after it)")
    key_file = _pem_path(s, "key_file", "the server certificate's private key (PEM)")
    ca_file = _pem_path(s, "ca_file", "the CA certificates that sign client certificates (PEM)")
    if key_file is not None:
        key_value = s.get("key_file")
        if key_value is not None:
            key_value.warn_if_others_can_read(key_file)
    if cert_file is not None and key_file is not None and ca_file is not None:
        problem = check_tls_files(cert_file, key_file, ca_file)
        if problem is not None:
            s.error(problem[0], problem[1])
    listener = TlsListener(
        host=host or "",
        port=port,
        cert_file=cert_file or "",
        key_file=key_file or "",
        ca_file=ca_file or "",
        tls13_only=s.get_bool("tls13_only", d.tls13_only),
        handshake_timeout=s.get_duration("handshake_timeout", d.handshake_timeout, 1, 60),
        idle_timeout=s.get_duration("idle_timeout", d.idle_timeout, 5, 86400),
        max_connections_per_client=s.get_int(
            "max_connections_per_client", d.max_connections_per_client, 1, 1024
        ),
    )
    if host is None or None in (cert_file, key_file, ca_file):
        return None
    return listener


def _pem_path(s: Section, key: str, what: str) -> str | None:
    value = required(s, key, f"give {what}")
    if value is None:
        return None
    path = value.as_path()
    if path is None:
        return None
    if not Path(path).is_file():
        value.error(f"{path} does not exist or is not a file")
        return None
    return path


def check_tls_files(cert_file: str, key_file: str, ca_file: str) -> tuple[str, str] | None:
    """(key, problem) when the files cannot serve as a RadSec listener's identity and trust.

    Read again at every start and reload (:mod:`radmfa.radius.tlscontext`); checked here too so
    ``check-config`` and a refused reload name the file.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        certs = x509.load_pem_x509_certificates(Path(cert_file).read_bytes())
    except (OSError, ValueError) as error:
        return "cert_file", f"{cert_file}: not a PEM certificate ({error})"
    try:
        key = load_pem_private_key(Path(key_file).read_bytes(), password=None)
    except TypeError:
        return "key_file", f"{key_file}: the key is encrypted; give it without a passphrase"
    except (OSError, ValueError) as error:
        return "key_file", f"{key_file}: not a PEM private key ({error})"
    if key.public_key() != certs[0].public_key():
        return "key_file", f"{key_file} is not the key of the certificate in {cert_file}"
    try:
        x509.load_pem_x509_certificates(Path(ca_file).read_bytes())
    except (OSError, ValueError) as error:
        return "ca_file", f"{ca_file}: not PEM CA certificates ({error})"
    return None
