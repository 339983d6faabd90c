"""Micro-benchmark of a login's RADIUS work in-process: validate, verify the
Message-Authenticator, decode, check the user name, encode the reply. No sockets, no reactor.

    PYTHONPATH=daemon .venv/bin/python -m bench.codec_micro            # this build
    PYTHONPATH=/tmp/pure/daemon .venv/bin/python -m bench.codec_micro  # a pure copy

It prints the build (``radmfa.native.describe``) and microseconds per request (best of
``--repeat`` runs of ``--number`` requests): compare builds by alternating runs of this script.
"""

from __future__ import annotations

import argparse
import json
import timeit

from radmfa.auth.identity import check_user
from radmfa.native import describe
from radmfa.radius import codec

SECRET = b"bench-shared-secret"


def one_login(packet: bytes) -> bytes:
    """What the UDP protocol does for an Access-Request, minus the pipeline."""
    valid = codec.validate_packet(packet)
    if codec.verify_message_authenticator(valid, SECRET) is not True:
        raise AssertionError("Message-Authenticator")
    request = codec.decode_request(valid, SECRET, "nas", "127.0.0.1")
    check_user(request.request.user_name)
    return codec.encode_reply(request, SECRET, codec.ACCESS_ACCEPT, reply_messages="Welcome")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    packet = codec.encode_request(
        SECRET,
        identifier=7,
        user_name="alice@example.org",
        password="correct horse battery 123456",
        attributes=[
            (codec.Attr.NAS_IDENTIFIER, b"vpn-1"),
            (codec.Attr.CALLING_STATION_ID, b"10.0.0.9"),
        ],
        message_authenticator=True,
    )
    one_login(packet)
    best = min(timeit.repeat(lambda: one_login(packet), number=args.number, repeat=args.repeat))
    print(json.dumps({"build": describe(), "us_per_request": round(best / args.number * 1e6, 2)}))


if __name__ == "__main__":
    main()
