"""Trusted devices: a (user, station) pair remembered as one client and NAS report it."""

from __future__ import annotations

from radmfa.store.engines.dialect import Statement
from radmfa.store.model import DeviceRef, TrustedDevice
from radmfa.store.queries.base import Queries

__all__ = ["REVOKE_DEVICES", "DeviceQueries"]

REMEMBER_DEVICE = Statement(
    "INSERT INTO devices (username, device, client, nas_id, remembered_at, expires_at) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (username, device, client, nas_id) "
    "DO UPDATE SET remembered_at = excluded.remembered_at, expires_at = excluded.expires_at"
)
TRUSTED_DEVICE = Statement(
    "SELECT remembered_at, expires_at FROM devices WHERE username = ? AND device = ? "
    "AND client = ? AND nas_id = ? AND expires_at > ?"
)
#: A NULL parameter switches its condition off (typed, so PostgreSQL knows what NULL it is).
LIST_DEVICES = Statement(
    "SELECT username, device, client, nas_id, remembered_at, expires_at FROM devices "
    "WHERE (CAST(:user AS TEXT) IS NULL OR username = :user) AND expires_at > :now "
    "ORDER BY username, device, client, nas_id"
)
REVOKE_DEVICES = Statement(
    "DELETE FROM devices WHERE username = :user "
    "AND (CAST(:device AS TEXT) IS NULL OR device = :device)"
)


class DeviceQueries(Queries):
    def remember_device(self, user: str, device: DeviceRef, now: float, expires_at: float) -> None:
        self._engine.write(
            f"remembering a device of {user!r}",
            REMEMBER_DEVICE,
            (user, device.station, device.client, device.nas_id, now, expires_at),
        )

    def trusted_device(self, user: str, device: DeviceRef, now: float) -> TrustedDevice | None:
        rows = self._engine.read(
            f"reading a device of {user!r}",
            TRUSTED_DEVICE,
            (user, device.station, device.client, device.nas_id, now),
        )
        if not rows:
            return None
        remembered_at, expires_at = rows[0]
        return TrustedDevice(
            user, device.station, device.client, device.nas_id, remembered_at, expires_at
        )

    def list_devices(self, user: str | None, now: float) -> list[TrustedDevice]:
        rows = self._engine.read("listing devices", LIST_DEVICES, {"user": user, "now": now})
        return [TrustedDevice(*row) for row in rows]

    def revoke_devices(self, user: str, device: str | None = None) -> int:
        return self._engine.write(
            f"revoking devices of {user!r}", REVOKE_DEVICES, {"user": user, "device": device}
        )
