"""radmfa serve | check-config."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from radmfa.cli.main import EXIT_FAILED, EXIT_USAGE
from radmfa.clocktrust import CLOCK_UNSYNCHRONISED, kernel_clock_synchronised
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
    if kernel_clock_synchronised() is False:
        print(f"warning: {CLOCK_UNSYNCHRONISED}", file=sys.stderr)
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
    log_format = getattr(args, "log_format", None) or config.logging.format
    predicate = configure_logging(config.logging.level, tag=tag, fmt=log_format)
    if args.worker is None:
        for warning in config.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    if config.radius.workers > 1 and args.worker is None:
        return _supervise(args, config, reactor)
    return _serve(args, config, reactor, predicate)


def _serve(args: argparse.Namespace, config: Config, reactor: Any, predicate: Any) -> int:
    from twisted.internet.error import CannotListenError

    from radmfa.logsetup import buffer_decision_lines, set_level
    from radmfa.notify import Notifier
    from radmfa.service import Daemon, SetupError
    from radmfa.supervisor import SupervisorChannel
    from radmfa.tuning import settle_heap, shorten_gil_switch

    notifier = Notifier.from_environ(reactor)  # systemd; workers have no NOTIFY_SOCKET
    channel = SupervisorChannel.from_environ()  # the supervisor, when this is a worker
    daemon = Daemon(config, reactor, worker=args.worker)
    # Added before the daemon's own trigger, so STOPPING=1 goes out before the drain.
    reactor.addSystemEventTrigger("before", "shutdown", notifier.stopping)
    try:
        daemon.start()
    except SetupError as e:
        print(f"radmfa: {e}", file=sys.stderr)
        return EXIT_FAILED
    except (OSError, CannotListenError) as e:  # a listen address in use or not local
        print(f"radmfa: cannot start: {e}", file=sys.stderr)
        return EXIT_FAILED

    def ready() -> None:
        """Sockets bound, store open, configuration checked, and the reactor running, so a
        SIGTERM from now on drains instead of killing: only now say that we are ready."""
        settle_heap()  # after start-up, before the first request (see radmfa.tuning)
        shorten_gil_switch()
        daemon.log_ready()
        channel.ready()
        channel.start_heartbeat(reactor)
        notifier.ready(_status(daemon.config))
        notifier.start_watchdog()
        # Decision lines in batches from here on; every other line is still written at once.
        buffer_decision_lines(reactor)

    reactor.callWhenRunning(ready)

    def on_hup() -> None:
        notifier.reloading()
        ok = daemon.reload(args.config)
        if ok:
            set_level(predicate, daemon.config.logging.level)
        channel.reloaded(ok)
        notifier.ready(_status(daemon.config) if ok else _REFUSED)

    signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(on_hup))
    reactor.run()
    return 0


def _supervise(args: argparse.Namespace, config: Config, reactor: Any) -> int:
    from twisted.logger import Logger

    from radmfa.metrics import MetricsResource, SharedMetrics, listen_metrics
    from radmfa.notify import Notifier
    from radmfa.supervisor import Supervisor

    log = Logger(namespace="radmfa.supervisor")
    notifier = Notifier.from_environ(reactor)

    def ready() -> None:
        log.info(
            "radmfa ready: {n} workers listening on {addrs}",
            n=config.radius.workers,
            addrs=", ".join(f"{a.host}:{a.port}" for a in config.listen),
        )
        notifier.ready(_status(config))
        notifier.start_watchdog()

    shared = SharedMetrics() if config.metrics is not None else None
    if shared is not None and config.metrics is not None:
        try:
            listen_metrics(reactor, config.metrics.listen, MetricsResource(shared.registry))
        except Exception as e:
            shared.close()
            print(f"radmfa: metrics: cannot listen: {e}", file=sys.stderr)
            return EXIT_FAILED
    argv = ["-m", "radmfa", "-c", args.config, "serve"]
    if getattr(args, "log_format", None):
        argv += ["--log-format", args.log_format]
    supervisor = Supervisor(
        reactor,
        argv,
        config.radius.workers,
        ready,
        watchdog=notifier.watchdog,
        extra_env=shared.worker_env if shared is not None else None,
        on_worker_ended=shared.worker_ended if shared is not None else None,
    )

    def on_hup() -> None:
        nonlocal config
        try:
            config = load_config(args.config)
        except ConfigError as e:
            for problem in e.problems:
                log.error("reload refused, workers keep their configuration: {p}", p=problem)
            return
        notifier.reloading()
        supervisor.reload().addCallback(
            lambda ok: notifier.ready(_status(config) if ok else _REFUSED)
        )

    reactor.addSystemEventTrigger("before", "shutdown", notifier.stopping)
    reactor.callWhenRunning(supervisor.start)
    signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(on_hup))
    try:
        reactor.run()
    finally:
        if shared is not None:
            shared.close()
    return EXIT_FAILED if supervisor.failed else 0


_REFUSED = "reload refused, still running the previous configuration (see the log)"


def _status(config: Config) -> str:
    """The STATUS= line systemctl status shows."""
    addrs = ", ".join(f"{a.host}:{a.port}" for a in config.listen)
    workers = f", {config.radius.workers} workers" if config.radius.workers > 1 else ""
    return f"answering on {addrs}; {len(config.clients)} client(s){workers}"
