"""The ``listen`` and ``radius`` sections: where the daemon answers, and how it paces requests."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from radmfa.config.load import Section

__all__ = [
    "DEFAULT_LISTEN",
    "RADIUS_KEYS",
    "ListenAddress",
    "RadiusConfig",
    "parse_listen",
    "parse_listen_address",
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
