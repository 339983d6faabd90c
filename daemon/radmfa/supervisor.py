"""Several worker processes behind the same UDP ports, for servers with more than one core.

The supervisor binds nothing itself. It starts ``radius.workers`` copies of ``radmfa serve``
in worker mode; each binds the listen addresses with SO_REUSEPORT, so the kernel spreads
clients over them while keeping one client's (address, port) on one worker: a retransmission
always meets the duplicate cache that saw the original. Everything that must be shared
(lockout, replay protection, challenge State) lives in the store.

Signals: SIGHUP and SIGTERM are passed on to every worker. A worker that dies is started
again; if workers keep dying, the supervisor stops and exits non-zero so systemd can act.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from twisted.internet import protocol
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import ProcessExitedAlready
from twisted.logger import Logger

log = Logger(namespace="radmfa.supervisor")

READY_FD = 3
READY_ENV = "RADMFA_READY_FD"
RESTART_DELAY = 1.0
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
STOP_TIMEOUT = 20.0


def announce_ready() -> None:
    """Called by a worker once its sockets are bound: tells the supervisor over fd 3."""
    fd = os.environ.get(READY_ENV)
    if fd is None:
        return
    try:
        os.write(int(fd), b"ready\n")
        os.close(int(fd))
    except OSError:
        pass


class WorkerProcess(protocol.ProcessProtocol):
    def __init__(self, supervisor: Supervisor, index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.ready = False
        self.ended: Deferred[None] = Deferred()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == READY_FD and b"ready" in data and not self.ready:
            self.ready = True
            self.supervisor.worker_ready(self)

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

    def start(self) -> None:
        for index in range(self.count):
            self._spawn(index)
        self.reactor.addSystemEventTrigger("before", "shutdown", self.stop)

    def _spawn(self, index: int) -> None:
        worker = WorkerProcess(self, index)
        env = dict(os.environ)
        env[READY_ENV] = str(READY_FD)
        transport = self.reactor.spawnProcess(
            worker,
            sys.executable,
            [sys.executable, *self.argv, "--worker", str(index)],
            env=env,
            childFDs={0: "w", 1: 1, 2: 2, READY_FD: "r"},
        )
        self.workers[index] = (worker, transport)

    def worker_ready(self, worker: WorkerProcess) -> None:
        if not self.announced and all(w.ready for w, _ in self.workers.values()):
            self.announced = True
            self.on_ready()

    def worker_ended(self, worker: WorkerProcess, reason: Any) -> None:
        if self.workers.get(worker.index, (None,))[0] is not worker:
            return
        del self.workers[worker.index]
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
