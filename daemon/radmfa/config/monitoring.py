"""The ``logging`` and ``metrics`` sections: what the daemon tells its operators, and where."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal, cast

from radmfa.config.load import Section
from radmfa.config.radius import ListenAddress, parse_listen_address

__all__ = [
    "LOGGING_KEYS",
    "METRICS_KEYS",
    "LoggingConfig",
    "MetricsConfig",
    "parse_logging",
    "parse_metrics",
]

LOGGING_KEYS = ("level", "format")
METRICS_KEYS = ("listen",)


@dataclass(frozen=True)
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    #: "text": one readable line per event; "json": one JSON object per line, for collectors.
    format: Literal["text", "json"] = "text"


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus metrics over HTTP; off unless the ``metrics`` section is given."""

    listen: ListenAddress = ListenAddress("127.0.0.1", 9812)  # noqa: RUF009 (frozen)


def parse_logging(s: Section) -> LoggingConfig:
    level = s.get_choice(
        "level", LoggingConfig.level, ("debug", "info", "warning", "error"), fold=str.lower
    )
    log_format = s.get_choice("format", LoggingConfig.format, ("text", "json"), fold=str.lower)
    return LoggingConfig(
        level=cast(Literal["debug", "info", "warning", "error"], level),
        format=cast(Literal["text", "json"], log_format),
    )


def parse_metrics(root: Section) -> MetricsConfig | None:
    """Absent: no metrics endpoint. ``metrics: {}`` serves on the loopback default."""
    if "metrics" not in root:
        return None
    s = root.section("metrics", METRICS_KEYS)
    value = s.get("listen")
    text = value.text() if value is not None else None
    if value is None or text is None:
        return MetricsConfig()
    try:
        listen = parse_listen_address(text)
    except ValueError as exc:
        value.error(str(exc).replace("1812", "9812"))
        return MetricsConfig()
    if not ipaddress.ip_address(listen.host).is_loopback:
        value.warn(
            "the metrics endpoint has no authentication and shows client names and traffic; "
            "keep it on loopback or firewall it to the Prometheus server"
        )
    return MetricsConfig(listen=listen)
