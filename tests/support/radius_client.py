"""A RADIUS test client built on pyrad: an independent implementation checks our codec.

It builds requests (optionally without Message-Authenticator, with Proxy-State, State...),
sends raw datagrams over loopback UDP and verifies replies the way a strict post-BlastRADIUS
client does (Response Authenticator, Message-Authenticator required and first).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyrad import packet as rp
from pyrad.dictionary import Dictionary

DICTIONARY = Dictionary(
    str(Path(__file__).resolve().parents[2] / "daemon" / "radmfa" / "radius" / "dictionary")
)
ACCEPT, REJECT, CHALLENGE = rp.AccessAccept, rp.AccessReject, rp.AccessChallenge


@dataclass
class Reply:
    code: int
    raw: bytes
    packet: rp.Packet

    @property
    def state(self) -> bytes | None:
        values = self.packet.get(24)
        return values[0] if values else None

    @property
    def messages(self) -> list[str]:
        return [v.decode("utf-8") for v in self.packet.get(18, [])]

    @property
    def attribute_types(self) -> list[int]:
        types, pos = [], 20
        while pos < len(self.raw):
            types.append(self.raw[pos])
            pos += self.raw[pos + 1]
        return types


def build_request(
    secret: bytes,
    user: bytes | str | None,
    password: bytes | str | None,
    *,
    message_authenticator: bool = True,
    state: bytes | None = None,
    proxy_states: tuple[bytes, ...] = (),
    extra: dict[int, list[bytes]] | None = None,
    code: int = rp.AccessRequest,
    identifier: int | None = None,
) -> rp.AuthPacket:
    pkt = rp.AuthPacket(code=code, secret=secret, dict=DICTIONARY, id=identifier)
    if message_authenticator:
        pkt.add_message_authenticator()
    if user is not None:
        pkt[1] = [user.encode() if isinstance(user, str) else user]
    if password is not None:
        pkt[2] = [pkt.PwCrypt(password)]
    if state is not None:
        pkt[24] = [state]
    for key, values in (extra or {}).items():
        pkt[key] = values
    if proxy_states:
        pkt[33] = list(proxy_states)
    return pkt


class RadiusTestClient:
    def __init__(
        self, port: int, secret: bytes, host: str = "127.0.0.1", source: str | None = None
    ) -> None:
        """``source`` picks the loopback address requests come from (127.0.0.0/8 is all ours),
        so one daemon can be tested with several client entries."""
        self.address = (host, port)
        self.secret = secret
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((source or host, 0))

    def close(self) -> None:
        self.sock.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendto(data, self.address)

    def receive_raw(self, timeout: float) -> bytes | None:
        self.sock.settimeout(timeout)
        try:
            data, _ = self.sock.recvfrom(8192)
        except TimeoutError:
            return None
        return data

    def exchange(self, pkt: rp.AuthPacket, timeout: float = 5.0) -> Reply | None:
        raw = pkt.RequestPacket()
        self.send_raw(raw)
        return self.read_reply(pkt, timeout)

    def read_reply(self, pkt: rp.AuthPacket, timeout: float = 5.0) -> Reply | None:
        data = self.receive_raw(timeout)
        if data is None:
            return None
        reply = rp.Packet(packet=data, secret=self.secret, dict=DICTIONARY)
        if not pkt.VerifyReply(reply, data, enforce_ma=True):
            raise AssertionError(f"reply failed verification: {data.hex()}")
        if data[20] != 80:
            raise AssertionError("Message-Authenticator is not the first attribute")
        return Reply(reply.code, data, reply)

    def auth(
        self, user: str | bytes, password: str | bytes, *, timeout: float = 5.0, **kw: Any
    ) -> Reply | None:
        """``kw``: :func:`build_request`'s keyword arguments."""
        return self.exchange(build_request(self.secret, user, password, **kw), timeout)
