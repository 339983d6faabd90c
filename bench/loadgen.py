"""A closed-loop RADIUS load generator: N outstanding requests, each slot on its own UDP socket.

Requests are encoded before the clock starts, so the generator spends its time sending and
receiving, the same for every server it drives. A request unanswered after ``timeout`` seconds
is lost (no retransmission: a lost request is a failure the table must show).

Several targets (nodes of one service behind no load balancer) share the sockets in turn:
socket k talks to target k mod n, so every target gets the same share of the requests.
"""

from __future__ import annotations

import os
import selectors
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from radmfa.radius.codec import ACCESS_ACCEPT, ACCESS_CHALLENGE, ACCESS_REJECT, encode_request

_KINDS = {ACCESS_ACCEPT: "accept", ACCESS_REJECT: "reject"}

Address = tuple[str, int]


@dataclass(frozen=True)
class Attempt:
    user: str
    password: str
    expect: str  # "accept" | "reject"


@dataclass
class LoadResult:
    concurrency: int
    sent: int = 0
    accepts: int = 0
    rejects: int = 0
    challenges: int = 0
    lost: int = 0
    unexpected: int = 0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)

    def count(self, code: int, attempt: Attempt, latency: float) -> None:
        """One answer: its latency, its kind, and whether it was the one expected."""
        self.latencies.append(latency)
        if code == ACCESS_ACCEPT:
            self.accepts += 1
        elif code == ACCESS_REJECT:
            self.rejects += 1
        elif code == ACCESS_CHALLENGE:
            self.challenges += 1
        if _KINDS.get(code) != attempt.expect:
            self.unexpected += 1

    @property
    def answered(self) -> int:
        return self.accepts + self.rejects + self.challenges

    @property
    def accepts_per_second(self) -> float:
        return self.accepts / self.elapsed if self.elapsed else 0.0

    @property
    def answers_per_second(self) -> float:
        return self.answered / self.elapsed if self.elapsed else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
        return ordered[index]


def _encode(secret: bytes, attempt: Attempt, identifier: int) -> tuple[bytes, bytes]:
    authenticator = os.urandom(16)
    packet = encode_request(
        secret,
        identifier=identifier,
        authenticator=authenticator,
        user_name=attempt.user.encode(),
        password=attempt.password.encode(),
        message_authenticator=True,
    )
    return packet, authenticator


def spread(targets: Sequence[Address], sockets_count: int) -> list[Address]:
    """The target of each socket: round robin, so n targets split the load evenly."""
    if not targets:
        raise ValueError("at least one target is needed")
    return [targets[slot % len(targets)] for slot in range(sockets_count)]


def run_load(
    targets: Sequence[Address],
    secret: bytes,
    attempts: Sequence[Attempt],
    concurrency: int,
    timeout: float = 5.0,
) -> LoadResult:
    """Send every attempt once, keeping ``concurrency`` of them outstanding (spread over
    ``targets``)."""
    concurrency = max(1, min(concurrency, len(attempts)))
    result = LoadResult(concurrency)
    # Slot k sends attempts k, k+c, k+2c ...: pre-encode each with its identifier.
    queues: list[list[tuple[bytes, Attempt]]] = [[] for _ in range(concurrency)]
    for index, attempt in enumerate(attempts):
        slot = index % concurrency
        packet, _ = _encode(secret, attempt, len(queues[slot]) % 256)
        queues[slot].append((packet, attempt))

    selector = selectors.DefaultSelector()
    sockets: list[socket.socket] = []
    pending: dict[int, tuple[float, Attempt, int]] = {}  # slot -> (sent at, attempt, id)
    position = [0] * concurrency
    try:
        for slot, target in enumerate(spread(targets, concurrency)):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.connect(target)
            sockets.append(sock)
            selector.register(sock, selectors.EVENT_READ, slot)

        def send_next(slot: int, now: float) -> None:
            if position[slot] >= len(queues[slot]):
                return
            packet, attempt = queues[slot][position[slot]]
            position[slot] += 1
            sockets[slot].send(packet)
            pending[slot] = (now, attempt, packet[1])
            result.sent += 1

        started = time.perf_counter()
        for slot in range(concurrency):
            send_next(slot, time.perf_counter())
        while pending:
            events = selector.select(timeout=0.05)
            now = time.perf_counter()
            for key, _ in events:
                slot = key.data
                try:
                    data = sockets[slot].recv(4096)
                except (BlockingIOError, ConnectionRefusedError):
                    continue
                if slot not in pending or len(data) < 20 or data[1] != pending[slot][2]:
                    continue  # a late answer to a request already counted as lost
                sent_at, attempt, _ = pending.pop(slot)
                result.count(data[0], attempt, now - sent_at)
                send_next(slot, now)
            for slot, (sent_at, _attempt, _id) in list(pending.items()):
                if now - sent_at > timeout:
                    del pending[slot]
                    result.lost += 1
                    send_next(slot, now)
        result.elapsed = time.perf_counter() - started
    finally:
        selector.close()
        for sock in sockets:
            sock.close()
    return result


def run_rate(
    targets: Sequence[Address],
    secret: bytes,
    attempts: Sequence[Attempt],
    rate: float,
    timeout: float = 5.0,
    sockets_count: int = 64,
) -> LoadResult:
    """Open loop: send at a fixed ``rate`` whatever the answers do, so servers are compared
    at the same offered load (latency percentiles then mean the same thing for both)."""
    result = LoadResult(concurrency=0)
    selector = selectors.DefaultSelector()
    socks: list[socket.socket] = []
    # (socket index, identifier) -> (sent at, attempt); identifiers cycle per socket.
    pending: dict[tuple[int, int], tuple[float, Attempt]] = {}
    packets = []
    for index, attempt in enumerate(attempts):
        slot, identifier = index % sockets_count, (index // sockets_count) % 256
        packet, _ = _encode(secret, attempt, identifier)
        packets.append((slot, identifier, packet, attempt))
    try:
        for slot, target in enumerate(spread(targets, sockets_count)):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.connect(target)
            socks.append(sock)
            selector.register(sock, selectors.EVENT_READ, slot)
        started = time.perf_counter()
        next_index = 0
        while next_index < len(packets) or pending:
            now = time.perf_counter()
            while next_index < len(packets) and now >= started + next_index / rate:
                slot, identifier, packet, attempt = packets[next_index]
                if (slot, identifier) in pending:  # still unanswered after 256 rounds: lost
                    pending.pop((slot, identifier))
                    result.lost += 1
                socks[slot].send(packet)
                pending[(slot, identifier)] = (now, attempt)
                result.sent += 1
                next_index += 1
            wait = started + next_index / rate - now if next_index < len(packets) else 0.05
            for key, _ in selector.select(timeout=max(0.0, min(wait, 0.05))):
                slot = key.data
                try:
                    data = socks[slot].recv(4096)
                except (BlockingIOError, ConnectionRefusedError):
                    continue
                entry = pending.pop((slot, data[1]), None) if len(data) >= 20 else None
                if entry is None:
                    continue
                sent_at, attempt = entry
                result.count(data[0], attempt, time.perf_counter() - sent_at)
            now = time.perf_counter()
            for key, (sent_at, _attempt) in list(pending.items()):
                if now - sent_at > timeout:
                    del pending[key]
                    result.lost += 1
        result.elapsed = time.perf_counter() - started
    finally:
        selector.close()
        for sock in socks:
            sock.close()
    return result
