"""radmfa serve | check-config."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from radmfa.cli.main import EXIT_FAILED, EXIT_USAGE
from radmfa.config import Config, ConfigError, load_config


def run_check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{args.config}: configuration OK")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE

    from twisted.internet import reactor  # noqa: TID251 - the one place that owns the reactor

    from radmfa.logsetup import configure_logging

    tag = "" if args.worker is None else f"w{args.worker}"
    predicate = configure_logging(config.logging.level, tag=tag)
    if args.worker is None:
        for warning in config.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    if config.radius.workers > 1 and args.worker is None:
        return _supervise(args, config, reactor)
    return _serve(args, config, reactor, predicate)


def _serve(args: argparse.Namespace, config: Config, reactor: Any, predicate: Any) -> int:
    from twisted.internet.error import CannotListenError

    from radmfa.logsetup import set_level
    from radmfa.service import Daemon, SetupError
    from radmfa.supervisor import announce_ready

    daemon = Daemon(config, reactor, worker=args.worker)
    try:
        daemon.start()
    except SetupError as e:
        print(f"radmfa: {e}", file=sys.stderr)
        return EXIT_FAILED
    except (OSError, CannotListenError) as e:  # a listen address in use or not local
        print(f"radmfa: cannot start: {e}", file=sys.stderr)
        return EXIT_FAILED
    announce_ready()

    def on_hup() -> None:
        if daemon.reload(args.config):
            set_level(predicate, daemon.config.logging.level)

    signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(on_hup))
    reactor.run()
    return 0


def _supervise(args: argparse.Namespace, config: Config, reactor: Any) -> int:
    from twisted.logger import Logger

    from radmfa.supervisor import Supervisor

    log = Logger(namespace="radmfa.supervisor")

    def ready() -> None:
        log.info(
            "radmfa ready: {n} workers listening on {addrs}",
            n=config.radius.workers,
            addrs=", ".join(f"{a.host}:{a.port}" for a in config.listen),
        )

    supervisor = Supervisor(
        reactor, ["-m", "radmfa", "-c", args.config, "serve"], config.radius.workers, ready
    )

    def on_hup() -> None:
        try:
            load_config(args.config)
        except ConfigError as e:
            for problem in e.problems:
                log.error("reload refused, workers keep their configuration: {p}", p=problem)
            return
        supervisor.signal_all(signal.SIGHUP)

    reactor.callWhenRunning(supervisor.start)
    signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(on_hup))
    reactor.run()
    return EXIT_FAILED if supervisor.failed else 0
