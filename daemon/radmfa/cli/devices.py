"""radmfa device list | revoke: the (user, Calling-Station-Id) pairs remembered after a login
with a second factor."""

from __future__ import annotations

import argparse
import json

from radmfa.admin.actor import cli_actor
from radmfa.admin.users import revoke_devices
from radmfa.auth.stations import device_key
from radmfa.cli.common import config_from, now, store_from, user_arg
from radmfa.cli.main import CommandFailed, UsageError
from radmfa.cli.tokens import _iso


def run_list(args: argparse.Namespace) -> int:
    config = config_from(args)
    user = user_arg(args.user, config) if args.user else None
    store = store_from(config)
    try:
        devices = store.list_devices(user, now())
    finally:
        store.close()
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "user": d.user,
                        "device": d.device,
                        "client": d.client,
                        "nas_identifier": d.nas_id or None,
                        "remembered_at": _iso(d.remembered_at),
                        "expires": _iso(d.expires_at),
                    }
                    for d in devices
                ]
            )
        )
        return 0
    if not devices:
        print("no trusted devices" + (f" for {user}" if user else ""))
        return 0
    width = max(24, *(len(d.user) + 1 for d in devices))
    dwidth = max(20, *(len(d.device) + 1 for d in devices))
    cwidth = max(12, *(len(d.client) + 1 for d in devices))
    nwidth = max(12, *(len(d.nas_id or "-") + 1 for d in devices))
    print(
        f"{'USER':<{width}} {'DEVICE':<{dwidth}} {'CLIENT':<{cwidth}} {'NAS':<{nwidth}} "
        f"{'REMEMBERED':<21} EXPIRES"
    )
    for d in devices:
        print(
            f"{d.user:<{width}} {d.device:<{dwidth}} {d.client:<{cwidth}} "
            f"{d.nas_id or '-':<{nwidth}} {_iso(d.remembered_at):<21} {_iso(d.expires_at)}"
        )
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    config = config_from(args)
    user = user_arg(args.user, config)
    if bool(args.device) == bool(args.all):
        raise UsageError("name one DEVICE (as 'radmfa device list' shows it) or give --all")
    device = device_key(args.device) if args.device else None
    if args.device and device is None:
        raise UsageError(f"{args.device!r} is not a device")
    store = store_from(config)
    try:
        known = revoke_devices(store, cli_actor(args.reason), user, device, now=now())
    finally:
        store.close()
    if not known:
        what = f"device {device}" if device else "trusted devices"
        raise CommandFailed(f"{user} has no {what}")
    stations = dict.fromkeys(d.device for d in known)  # one station, several clients: once
    print(f"{user}: forgot {', '.join(stations)}")
    return 0
