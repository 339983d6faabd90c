"""radmfa serve | check-config."""

from __future__ import annotations

import argparse
import signal
import sys

from radmfa.cli.main import EXIT_FAILED, EXIT_USAGE
from radmfa.config import ConfigError, load_config


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
    from twisted.internet.error import CannotListenError

    from radmfa.logsetup import configure_logging, set_level
    from radmfa.service import Daemon, SetupError

    predicate = configure_logging(config.logging.level)
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    daemon = Daemon(config, reactor)
    try:
        daemon.start()
    except SetupError as e:
        print(f"radmfa: {e}", file=sys.stderr)
        return EXIT_FAILED
    except (OSError, CannotListenError) as e:  # a listen address in use or not local
        print(f"radmfa: cannot start: {e}", file=sys.stderr)
        return EXIT_FAILED

    def on_hup() -> None:
        if daemon.reload(args.config):
            set_level(predicate, daemon.config.logging.level)

    signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(on_hup))
    reactor.run()
    return 0
