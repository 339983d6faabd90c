"""radmfa demo: a working setup in one directory, so a newcomer can log in within a minute.

It writes a users file (the demo password backend), a random RADIUS secret, a config that uses
both with the embedded SQLite store, enrolls a TOTP token for the demo user, then serves.
Re-running it reuses what is already there, if it is the caller's own and nobody else can
write it.
"""

from __future__ import annotations

import argparse
import os
import stat
from pathlib import Path

from radmfa.cli.common import new_radius_secret
from radmfa.cli.main import EXIT_OK, UsageError

DEMO_USER = "alice"
DEMO_PASSWORD = "wonderland"

_CONFIG = """\
# Demo configuration written by 'radmfa demo'. See config/radmfa.yaml for every key.
listen:
  - 127.0.0.1:{port}
clients:
  - name: localhost
    address: 127.0.0.1/32
    secret_file: radius-secret
local_users:
  path: users
store:
  path: radmfa.sqlite3
  key_file: secret.key
otp:
  mode: auto
"""


def run_demo(args: argparse.Namespace) -> int:
    from radmfa.cli.main import main as cli_main
    from radmfa.directory.local import hash_password

    root = Path(args.dir).resolve()
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    _refuse_foreign(root)
    config_path = root / "radmfa.yaml"
    secret_path = root / "radius-secret"
    if not secret_path.exists():
        _write_private(secret_path, new_radius_secret(24) + "\n")
    users_path = root / "users"
    if not users_path.exists():
        _write_private(
            users_path,
            "# name:scrypt hash - demo password backend, not for production\n"
            f"{DEMO_USER}:{hash_password(DEMO_PASSWORD)}\n",
        )
    if not config_path.exists():
        _write_private(config_path, _CONFIG.format(port=args.port))
    secret = secret_path.read_text().strip()

    store_path = root / "radmfa.sqlite3"
    if not store_path.exists():
        print(f"Enrolling a TOTP token for {DEMO_USER}:")
        if cli_main(["-c", str(config_path), "token", "add", DEMO_USER]) != 0:
            return 1
    print(
        f"""
Demo files are in {root}
  user: {DEMO_USER}   password: {DEMO_PASSWORD}   RADIUS secret: {secret}

Log in with the password followed by the 6-digit code from the app, for example:
  printf 'User-Name = "{DEMO_USER}"\\nUser-Password = "{DEMO_PASSWORD}123456"\\n\
Message-Authenticator = 0x00\\n' | radclient -x 127.0.0.1:{args.port} auth '{secret}'
Or send the password alone and answer the Access-Challenge with the code.
Manage it with: radmfa -c {config_path} token list | user show {DEMO_USER} | ...
"""
    )
    if args.no_serve:
        return EXIT_OK
    return cli_main(["-c", str(config_path), "serve"])


#: What a re-run reuses from the directory: its config names the users file, the store and
#: everything the daemon would run (an SMS command, say).
_REUSED = ("radmfa.yaml", "radius-secret", "users", "radmfa.sqlite3", "secret.key")


def _refuse_foreign(root: Path) -> None:
    """UsageError unless ``root`` and what the demo would reuse from it are the caller's own
    and writable by nobody else: otherwise root running the demo in another user's directory
    would serve (and run commands from) that user's configuration."""
    me = os.geteuid()
    for path in (root, *(root / name for name in _REUSED)):
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        kind = "directory" if path == root else "file"
        expected = stat.S_ISDIR if path == root else stat.S_ISREG
        if not expected(info.st_mode):
            problem = f"is not a plain {kind}"
        elif info.st_uid != me:
            problem = f"belongs to uid {info.st_uid}, not to you (uid {me})"
        elif info.st_mode & 0o022:
            problem = f"is writable by others (mode {stat.S_IMODE(info.st_mode):04o})"
        else:
            continue
        raise UsageError(
            f"{path} {problem}; radmfa demo would use the configuration and files in it. "
            "Give a directory of your own that only you can write (--dir)."
        )


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
