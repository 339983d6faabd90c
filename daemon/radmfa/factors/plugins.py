"""Finding factors: every ``radmfa.factors`` entry point is a factory for one factor type.

The entry point's name is the token type, its object a callable ``factory(context)`` that
returns the factor, or None when it is not configured (email without ``otp.email``). The
built-in factors are declared the same way in radmfa's own pyproject.toml, so a third-party
package adds a factor with nothing but an entry point::

    [project.entry-points."radmfa.factors"]
    yubiotp = "radmfa_yubi:create"

See docs/factors.md for the contract a factor keeps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from radmfa.config import Config
from radmfa.factors.base import FactorRegistry, SecondFactor
from radmfa.threads import BlockingRunner

ENTRY_POINT_GROUP = "radmfa.factors"


class FactorLoadError(Exception):
    """A factor's entry point could not be loaded or built; the message names it."""


@dataclass(frozen=True)
class FactorContext:
    """What a factor factory may use to build its factor."""

    config: Config
    #: The reactor (time, TCP, processes) in the daemon; None in the CLI, which never sends.
    reactor: Any = None
    #: Where blocking delivery work runs (smtplib); None in the CLI.
    send_runner: BlockingRunner | None = None
    #: True when the directory returns attributes with a successful bind (LDAP
    #: search-then-bind), so addresses may come from the directory.
    directory_attributes: bool = False
    #: ``otp.plugins.<type>`` from the configuration (plain data), for third-party factors.
    options: Mapping[str, Any] = field(default_factory=dict)


def factor_entry_points() -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep)  # the first distribution on sys.path wins, as for imports
    return found


def load_factors(context: FactorContext) -> FactorRegistry:
    """Build every installed factor; raise :class:`FactorLoadError` naming a broken one."""
    factors: list[SecondFactor] = []
    for name, ep in sorted(factor_entry_points().items()):
        plugin_context = FactorContext(
            config=context.config,
            reactor=context.reactor,
            send_runner=context.send_runner,
            directory_attributes=context.directory_attributes,
            options=context.config.otp.plugins.get(name, {}),
        )
        try:
            factory = ep.load()
            factor = factory(plugin_context)
        except Exception as e:
            raise FactorLoadError(
                f"second factor {name!r} ({ep.value}) could not be loaded: {e}"
            ) from e
        if factor is None:
            continue
        if getattr(factor, "type", None) != name:
            raise FactorLoadError(
                f"second factor entry point {name!r} ({ep.value}) built a factor of type "
                f"{getattr(factor, 'type', None)!r}; the names must match"
            )
        factors.append(factor)
    return FactorRegistry(factors)


def directory_attributes(config: Config) -> tuple[str, ...]:
    """LDAP attributes the factors want with each bind: only search-then-bind can return them
    (a direct bind reads no entry), so with ``user_dn`` addresses come from the CLI alone."""
    if config.ldap is None or not config.ldap.base_dn:
        return ()
    wanted: list[str] = []
    if config.otp.email is not None and config.otp.email.address_attribute:
        wanted.append(config.otp.email.address_attribute)
    if config.otp.sms is not None and config.otp.sms.number_attribute:
        wanted.append(config.otp.sms.number_attribute)
    return tuple(wanted)


class ReactorThreadRunner:
    """A BlockingRunner on the reactor's own thread pool (started and stopped with it), for
    the occasional blocking delivery (smtplib)."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor

    def run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from twisted.internet.threads import deferToThreadPool

        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), fn, *args, **kwargs)


def build_factors(config: Config, reactor: Any) -> FactorRegistry:
    """The daemon's registry: every installed factor, able to deliver codes."""
    return load_factors(
        FactorContext(
            config=config,
            reactor=reactor,
            send_runner=ReactorThreadRunner(reactor),
            directory_attributes=bool(directory_attributes(config)),
        )
    )
