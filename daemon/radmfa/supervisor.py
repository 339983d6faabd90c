"""Several worker processes behind the same UDP ports, for servers with more than one core.

The supervisor binds nothing itself. It starts ``radius.workers`` copies of ``radmfa serve``
in worker mode; each binds the listen addresses with SO_REUSEPORT, so the kernel spreads
clients over them while keeping one client's (address, port) on one worker, so a
retransmission usually meets the duplicate cache that saw the original. Not always: when a
worker exits or starts, the kernel re-hashes flows over the new set of sockets, and a
retransmission can reach another worker. That worker finds the request's attempt, keyed on
its client, address, Identifier and Request Authenticator, in the store
(:meth:`radmfa.auth.ledger.Ledger.begin`): still being decided, it is dropped; failed, it is
rejected again without a bind; a failure is never counted twice. (A retransmission of a
request that succeeded is decided again: its code is then a replay.) Everything that must
be shared (lockout, attempts, replay protection, challenge State) lives in the store.

Signals: SIGHUP and SIGTERM are passed on to every worker. A worker that dies is started
again; if workers keep dying, the supervisor stops and exits non-zero so systemd can act.

Each worker keeps a pipe to the supervisor (fd 3) and writes one word per line on it:
``ready`` once its sockets are bound, ``reloaded ok`` / ``reloaded failed`` after a SIGHUP, and
``alive`` from its reactor when the systemd watchdog is on. The supervisor, the unit's main
process, is the only one that talks to systemd: READY=1 once every worker is ready, READY=1
after a reload once every worker has answered, and watchdog pings from its own reactor. A
worker whose heartbeats stop (a stuck reactor) is killed and started again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from twisted.internet import protocol
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from radmfa.notify import NOTIFY_ENV

log = Logger(namespace="radmfa.supervisor")

READY_FD = 3
READY_ENV = "RADMFA_READY_FD"
#: Seconds between a worker's ``alive`` lines; set by the supervisor when its watchdog is on.
HEARTBEAT_ENV = "RADMFA_HEARTBEAT_SEC"
RESTART_DELAY = 1.0
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
STOP_TIMEOUT = 20.0
#: How long a reload may take before the supervisor reports it done anyway (and failed).
RELOAD_TIMEOUT = 15.0


class SupervisorChannel:
    """A worker's side of the fd-3 pipe. Without a supervisor every method does nothing."""

    def __init__(self, fd: int | None, heartbeat: float | None = None) -> None:
        self.fd = fd
        self.heartbeat = heartbeat
        if fd is not None:
            os.set_blocking(fd, False)  # a stuck supervisor must not stall the worker
        self._beat: LoopingCall | None = None

    @classmethod
    def from_environ(cls, environ: dict[str, str] | None = None) -> SupervisorChannel:
        env = os.environ if environ is None else environ
        fd, beat = env.get(READY_ENV, ""), env.get(HEARTBEAT_ENV, "")
        try:
            heartbeat = float(beat) if beat else None
        except ValueError:
            heartbeat = None
        return cls(int(fd) if fd.isdigit() else None, heartbeat)

    def send(self, line: str) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):  # the supervisor is gone or its pipe is full
            os.write(self.fd, line.encode() + b"\n")

    def ready(self) -> None:
        self.send("ready")

    def reloaded(self, ok: bool) -> None:
        self.send("reloaded ok" if ok else "reloaded failed")

    def start_heartbeat(self, clock: IReactorTime) -> None:
        """``alive`` from the reactor, so the supervisor notices a worker that hangs."""
        if self.fd is None or self.heartbeat is None:
            return
        self._beat = LoopingCall(self.send, "alive")
        self._beat.clock = clock
        self._beat.start(self.heartbeat, now=True)


class WorkerProcess(protocol.ProcessProtocol):
    def __init__(self, supervisor: Supervisor, index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.ready = False
        self.ended: Deferred[None] = Deferred()
        self.last_seen = supervisor.reactor.seconds()
        self.pid: int | None = None
        self._buffer = b""

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD != READY_FD:
            return
        self.last_seen = self.supervisor.reactor.seconds()
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        for line in lines:
            word = line.decode(errors="replace").strip()
            if word == "ready" and not self.ready:
                self.ready = True
                self.supervisor.worker_ready(self)
            elif word.startswith("reloaded "):
                self.supervisor.worker_reloaded(self, word == "reloaded ok")

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(None)
        self.supervisor.worker_ended(self, reason)


class Supervisor:
    def __init__(
        self,
        reactor: Any,
        argv: list[str],
        workers: int,
        on_ready: Callable[[], None],
        *,
        watchdog: float | None = None,
        extra_env: dict[str, str] | None = None,
        on_worker_ended: Callable[[int | None], None] | None = None,
    ) -> None:
        self.reactor = reactor
        self.argv = argv
        self.count = workers
        self.on_ready = on_ready
        self.workers: dict[int, tuple[WorkerProcess, Any]] = {}
        self.stopping = False
        self.announced = False
        self.restarts: list[float] = []
        #: Set when workers kept dying and the supervisor gave up (exit status 1).
        self.failed = False
        #: The systemd watchdog interval: workers silent for this long are killed.
        self.watchdog = watchdog
        self.extra_env = dict(extra_env or {})
        #: Told the pid of every worker that ended (metrics bookkeeping).
        self.on_worker_ended = on_worker_ended
        self._reload: tuple[set[int], list[bool], Deferred[bool], Any] | None = None
        self._watch = LoopingCall(self.check_heartbeats)
        self._watch.clock = reactor

    def start(self) -> None:
        for index in range(self.count):
            self._spawn(index)
        self.reactor.addSystemEventTrigger("before", "shutdown", self.stop)
        if self.watchdog is not None:
            self._watch.start(self.watchdog / 4, now=False)

    def _spawn(self, index: int) -> None:
        worker = WorkerProcess(self, index)
        env = {k: v for k, v in os.environ.items() if k not in NOTIFY_ENV}
        env.update(self.extra_env)
        env[READY_ENV] = str(READY_FD)
        if self.watchdog is not None:
            env[HEARTBEAT_ENV] = f"{self.watchdog / 4:g}"
        transport = self.reactor.spawnProcess(
            worker,
            sys.executable,
            [sys.executable, *self.argv, "--worker", str(index)],
            env=env,
            childFDs={0: "w", 1: 1, 2: 2, READY_FD: "r"},
        )
        worker.pid = transport.pid
        self.workers[index] = (worker, transport)

    def worker_ready(self, worker: WorkerProcess) -> None:
        if not self.announced and all(w.ready for w, _ in self.workers.values()):
            self.announced = True
            self.on_ready()

    def worker_reloaded(self, worker: WorkerProcess, ok: bool) -> None:
        if self._reload is None:
            return
        pending, results, _waiter, _timer = self._reload
        if worker.index in pending:
            pending.discard(worker.index)
            results.append(ok)
            if not ok:
                log.error("worker {i} refused the new configuration", i=worker.index)
            if not pending:
                self._finish_reload(all(results))

    def reload(self) -> Deferred[bool]:
        """SIGHUP every worker; fires True once all of them reloaded (False on any refusal,
        or after RELOAD_TIMEOUT)."""
        if self._reload is not None:
            self._finish_reload(False)
        if not self.workers:
            return succeed(True)
        waiter: Deferred[bool] = Deferred()
        timer = self.reactor.callLater(RELOAD_TIMEOUT, self._reload_timed_out)
        self._reload = (set(self.workers), [], waiter, timer)
        self.signal_all(signal.SIGHUP)
        return waiter

    def _reload_timed_out(self) -> None:
        if self._reload is not None:
            log.error(
                "workers {w} did not confirm the reload within {t:.0f}s",
                w=sorted(self._reload[0]),
                t=RELOAD_TIMEOUT,
            )
            self._reload = (self._reload[0], self._reload[1], self._reload[2], None)
            self._finish_reload(False)

    def _finish_reload(self, ok: bool) -> None:
        assert self._reload is not None
        _pending, _results, waiter, timer = self._reload
        self._reload = None
        if timer is not None and timer.active():
            timer.cancel()
        waiter.callback(ok)

    def check_heartbeats(self) -> None:
        """Kill a ready worker that has been silent for a whole watchdog interval."""
        if self.watchdog is None or self.stopping:
            return
        now = self.reactor.seconds()
        for worker, transport in list(self.workers.values()):
            if worker.ready and now - worker.last_seen > self.watchdog:
                log.error(
                    "worker {i} sent no heartbeat for {s:.0f}s (hung?); killing it",
                    i=worker.index,
                    s=now - worker.last_seen,
                )
                worker.last_seen = now  # one kill per silence
                with contextlib.suppress(ProcessExitedAlready, OSError):
                    transport.signalProcess(signal.SIGKILL)

    def worker_ended(self, worker: WorkerProcess, reason: Any) -> None:
        if self.workers.get(worker.index, (None,))[0] is not worker:
            return
        del self.workers[worker.index]
        if self.on_worker_ended is not None:
            self.on_worker_ended(worker.pid)
        if self._reload is not None and worker.index in self._reload[0]:
            self.worker_reloaded(worker, True)  # it restarts with the new configuration
        if self.stopping:
            return
        now = self.reactor.seconds()
        self.restarts = [t for t in self.restarts if now - t < RESTART_WINDOW] + [now]
        code = getattr(reason.value, "exitCode", None)
        if len(self.restarts) > MAX_RESTARTS:
            log.critical(
                "worker {i} exited ({code}); {n} restarts within {w:.0f}s, giving up",
                i=worker.index,
                code=code,
                n=len(self.restarts),
                w=RESTART_WINDOW,
            )
            self.failed = True
            self.reactor.stop()
            return
        log.error(
            "worker {i} exited ({code}); starting it again in {d:.0f}s",
            i=worker.index,
            code=code,
            d=RESTART_DELAY,
        )
        self.reactor.callLater(RESTART_DELAY, self._respawn, worker.index)

    def _respawn(self, index: int) -> None:
        if not self.stopping and index not in self.workers:
            self._spawn(index)

    def signal_all(self, sig: int) -> None:
        for _worker, transport in self.workers.values():
            with contextlib.suppress(ProcessExitedAlready, OSError):
                transport.signalProcess(sig)

    def stop(self) -> Deferred[Any]:
        """SIGTERM every worker and wait (bounded) until they have finished in-flight work."""
        self.stopping = True
        if self._watch.running:
            self._watch.stop()
        endings = [worker.ended for worker, _ in self.workers.values()]
        self.signal_all(signal.SIGTERM)
        killer = self.reactor.callLater(STOP_TIMEOUT, self.signal_all, signal.SIGKILL)
        d: Deferred[Any] = DeferredList(endings)

        def done(result: object) -> object:
            if killer.active():
                killer.cancel()
            log.info("radmfa stopped")
            return result

        return d.addBoth(done)
