"""radmfa test-auth USER: one real login against a running server, like radtest.

It sends a signed Access-Request (Message-Authenticator first, as radmfa requires), asks for
the code when the server answers Access-Challenge, verifies every reply (Response Authenticator
and Message-Authenticator) and prints the outcome. Exit 0 on Access-Accept, 1 on Access-Reject
or no answer, 2 on a usage or configuration problem.

Without ``--server`` / ``--secret`` it reads both from the configuration: the first listen
address, and the secret of the client entry that matches the address it sends from.
"""

from __future__ import annotations

import argparse
import getpass
import os
import socket
import sys
import time
from pathlib import Path

from radmfa.cli.common import secret_arg
from radmfa.cli.main import EXIT_FAILED, EXIT_OK, UsageError
from radmfa.config import ConfigError, ListenAddress, load_config, parse_listen_address
from radmfa.radius.codec import (
    ACCESS_ACCEPT,
    ACCESS_CHALLENGE,
    ACCESS_REJECT,
    Attr,
    MalformedPacket,
    encode_request,
    parse_attributes,
    verify_reply,
)

#: Challenge rounds followed before giving up (radmfa asks once; other servers may ask more).
MAX_ROUNDS = 3
_NAMES = {ACCESS_ACCEPT: "Access-Accept", ACCESS_REJECT: "Access-Reject"}


def run_test_auth(args: argparse.Namespace) -> int:
    server, secret = _target(args)
    password = _ask("Password: ", hidden=True)
    client = _Client(server, secret, timeout=args.timeout, tries=args.retries + 1)
    try:
        state: bytes | None = None
        for _ in range(MAX_ROUNDS):
            reply = client.exchange(args.user, password, state)
            if reply is None:
                print(
                    f"no reply from {_fmt(server)} after {client.tries} tries: is radmfa "
                    "running there, and is this host a client with this secret? "
                    "(requests from unknown addresses or with a wrong secret are dropped)",
                    file=sys.stderr,
                )
                return EXIT_FAILED
            code, attributes = reply
            messages = [
                value.decode("utf-8", errors="replace")
                for kind, value in attributes
                if kind == Attr.REPLY_MESSAGE
            ]
            if code != ACCESS_CHALLENGE:
                text = " ".join(messages)
                print(_NAMES.get(code, f"code {code}") + (f": {text}" if text else ""))
                return EXIT_OK if code == ACCESS_ACCEPT else EXIT_FAILED
            states = [value for kind, value in attributes if kind == Attr.STATE]
            state = states[0] if states else None
            password = _ask("".join(messages).strip() + " " if messages else "Code: ")
        print("Access-Challenge again and again; giving up", file=sys.stderr)
        return EXIT_FAILED
    finally:
        client.close()


def _target(args: argparse.Namespace) -> tuple[ListenAddress, bytes]:
    """The server address and shared secret, from the options or the configuration."""
    server = None
    if args.server:
        try:
            server = parse_listen_address(args.server)
        except ValueError as e:
            raise UsageError(f"--server: {e}") from None
    secret = None
    if args.secret is not None:
        secret = secret_arg(args.secret, "--secret").encode("utf-8")
    elif args.secret_file is not None:
        try:
            secret = Path(args.secret_file).read_bytes().rstrip(b"\r\n")
        except OSError as e:
            raise UsageError(f"--secret-file: {e.strerror or e}") from None
    if server is not None and secret is not None:
        return server, secret
    try:
        config = load_config(args.config)
    except ConfigError as e:
        raise UsageError(
            "give --server and --secret, or fix the configuration:\n" + "\n".join(e.problems)
        ) from None
    if server is None:
        first = config.listen[0]
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(first.host, first.host)
        server = ListenAddress(host, first.port)
    if secret is None:
        from radmfa.radius.clients import ClientTable

        source = _source_address(server)
        client = ClientTable(config.clients).lookup(source)
        if client is None:
            raise UsageError(
                f"no client entry in {args.config} matches this host ({source}); add one "
                "or give --secret"
            )
        secret = client.secret
    return server, secret


def _source_address(server: ListenAddress) -> str:
    """The address this host sends from to reach ``server`` (no packet is sent)."""
    family = socket.AF_INET6 if ":" in server.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((server.host, server.port))
        except OSError as e:
            raise UsageError(f"cannot reach {_fmt(server)}: {e.strerror or e}") from None
        return str(probe.getsockname()[0])


def _ask(prompt: str, *, hidden: bool = False) -> str:
    """From the terminal (the password unechoed), or one line of standard input."""
    if sys.stdin.isatty():
        return getpass.getpass(prompt) if hidden else input(prompt)
    print(prompt, end="", file=sys.stderr, flush=True)
    line = sys.stdin.readline()
    if not line:
        raise UsageError("standard input ended before the " + ("password" if hidden else "code"))
    print(file=sys.stderr)
    return line.rstrip("\r\n")


class _Client:
    def __init__(self, server: ListenAddress, secret: bytes, timeout: float, tries: int) -> None:
        self.server = server
        self.secret = secret
        self.timeout = timeout
        self.tries = max(tries, 1)
        family = socket.AF_INET6 if ":" in server.host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.connect((server.host, server.port))
        self.identifier = int.from_bytes(os.urandom(1), "big")

    def close(self) -> None:
        self.sock.close()

    def exchange(
        self, user: str, password: str, state: bytes | None
    ) -> tuple[int, list[tuple[int, bytes]]] | None:
        """Send (and resend, unchanged, as a retransmission) until a verified reply."""
        self.identifier = (self.identifier + 1) % 256
        authenticator = os.urandom(16)
        packet = encode_request(
            self.secret,
            identifier=self.identifier,
            authenticator=authenticator,
            user_name=user,
            password=password,
            state=state,
            attributes=[(Attr.NAS_IDENTIFIER, b"radmfa-test-auth")],
            message_authenticator=True,
        )
        for _ in range(self.tries):
            try:
                self.sock.send(packet)
            except OSError as e:  # e.g. ECONNREFUSED from an earlier ICMP port unreachable
                print(f"cannot send to {_fmt(self.server)}: {e.strerror or e}", file=sys.stderr)
            reply = self._receive(authenticator)
            if reply is not None:
                return reply
        return None

    def _receive(self, authenticator: bytes) -> tuple[int, list[tuple[int, bytes]]] | None:
        deadline = time.monotonic() + self.timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                return None
            except OSError:
                return None  # port unreachable: nobody listens there
            if len(data) < 20 or data[1] != self.identifier:
                continue  # a late reply to an earlier request
            if not verify_reply(data, authenticator, self.secret):
                print(
                    "ignored a reply that failed verification: is the shared secret right?",
                    file=sys.stderr,
                )
                continue
            try:
                return data[0], parse_attributes(data)
            except MalformedPacket:
                continue
        return None


def _fmt(address: ListenAddress) -> str:
    host = f"[{address.host}]" if ":" in address.host else address.host
    return f"{host}:{address.port}"
