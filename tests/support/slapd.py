"""A throw-away OpenLDAP server (Debian's slapd) on a loopback port, with known users.

``Slapd(workdir)`` writes a slapd.conf (mdb backend), loads the fixture entries with
``slapadd -q`` and is ready to :meth:`Slapd.start`. The same data directory and port survive
:meth:`Slapd.stop` / :meth:`Slapd.kill` / :meth:`Slapd.start`, so restart and crash tests talk to
the same URL. slapd runs in the foreground with ``-d stats`` and its log goes to
``workdir/slapd.log``; :meth:`Slapd.binds` reads the BIND lines from it, which lets tests count
exactly how many binds reached the server.

Every slapd started here is killed when the test process ends, however it ends: the fixtures
use ``finally``, an ``atexit`` hook catches the rest, and ``setpriv --pdeathsig KILL`` makes the
kernel kill slapd if the test process dies without running Python cleanup.
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from ldap3.utils.dn import escape_rdn

from tests.support.ports import free_port
from tests.support.processes import kill, terminate

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
LDAPADD = "/usr/bin/ldapadd"
LDAPMODIFY = "/usr/bin/ldapmodify"
SCHEMA_DIR = "/etc/ldap/schema"
MODULE_DIR = "/usr/lib/ldap"

SUFFIX = "dc=example,dc=org"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PASSWORD = "admin-secret"
PEOPLE_DN = f"ou=people,{SUFFIX}"
STAFF_DN = f"ou=staff,{SUFFIX}"
SERVICES_DN = f"ou=services,{SUFFIX}"
#: The search account radmfa binds as in search-then-bind mode (read access to the tree).
SERVICE_DN = f"cn=radmfa,{SERVICES_DN}"
SERVICE_PASSWORD = "radmfa-service-secret"

GROUPS_DN = f"ou=groups,{SUFFIX}"
POLICIES_DN = f"ou=policies,{SUFFIX}"

#: ``LdapConfig.user_dn`` for direct binds against this directory.
USER_DN_TEMPLATE = f"uid={{username}},{PEOPLE_DN}"
#: ``LdapConfig.user_filter`` for search-then-bind (base ``SUFFIX``).
USER_FILTER = "(uid={username})"


@dataclass(frozen=True)
class LdapUser:
    uid: str
    password: str
    ou: str = "people"
    mail: str | None = None

    @property
    def dn(self) -> str:
        return f"uid={escape_rdn(self.uid)},ou={self.ou},{SUFFIX}"


ALICE = LdapUser("alice", "alice-Password-1", mail="alice@example.org")
BOB = LdapUser("bob", "bob-Secret-2", mail="bob@example.org")
CAROL = LdapUser("carol", "carol pass with spaces 3")
#: A uid with a space: the DN needs no escaping, the filter value keeps the space.
DAVE = LdapUser("dave smith", "dave-Password-4")
#: ``adm*`` would match this uid if the filter were not escaped.
ADMINISTRATOR = LdapUser("administrator", "administrator-Password-5")
#: A uid with a comma: a direct bind works only if the DN is escaped (uid=smith\, jr,...).
SMITH_JR = LdapUser("smith, jr", "smith-jr-Password-6")
#: A non-ASCII password, stored as SSHA over its UTF-8 bytes.
URSULA = LdapUser("ursula", "pässwörd€")
#: The same uid in two OUs: a search for uid=twin finds two entries (AMBIGUOUS_USER).
TWIN_PEOPLE = LdapUser("twin", "twin-people-Password-7", ou="people")
TWIN_STAFF = LdapUser("twin", "twin-staff-Password-8", ou="staff")

FIXTURE_USERS: tuple[LdapUser, ...] = (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    ADMINISTRATOR,
    SMITH_JR,
    URSULA,
    TWIN_PEOPLE,
    TWIN_STAFF,
)
#: Users with a unique uid, keyed by it (the twins are left out on purpose).
USERS_BY_UID: dict[str, LdapUser] = {
    user.uid: user for user in FIXTURE_USERS if user.uid != TWIN_PEOPLE.uid
}


def ssha(password: str, salt: bytes | None = None) -> str:
    """``{SSHA}`` userPassword value (salted SHA-1, as ``slappasswd -h {SSHA}`` makes)."""
    salt = os.urandom(8) if salt is None else salt
    digest = hashlib.sha1(password.encode("utf-8") + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode("ascii")


def make_users(count: int, prefix: str = "load", ou: str = "people") -> list[LdapUser]:
    """``count`` users ``<prefix>00000``... with password ``<uid>-pw``, for load tests."""
    width = max(5, len(str(count - 1)))
    return [
        LdapUser(f"{prefix}{i:0{width}d}", f"{prefix}{i:0{width}d}-pw", ou=ou) for i in range(count)
    ]


_SAFE_LDIF_VALUE = re.compile(
    r"^[\x01-\x09\x0b-\x0c\x0e-\x1f\x21-\x39\x3b\x3d-\x7f][\x01-\x09\x0b-\x0c\x0e-\x7f]*$"
)


def ldif_line(attr: str, value: str) -> str:
    """One ``attr: value`` line, base64 (``attr:: ...``) when LDIF requires it (RFC 2849)."""
    if value == "" or (_SAFE_LDIF_VALUE.match(value) and not value.endswith(" ")):
        return f"{attr}: {value}"
    return f"{attr}:: {base64.b64encode(value.encode('utf-8')).decode('ascii')}"


def ldif_entry(dn: str, attrs: Sequence[tuple[str, str]]) -> str:
    lines = [ldif_line("dn", dn)]
    lines.extend(ldif_line(name, value) for name, value in attrs)
    return "\n".join(lines) + "\n\n"


def user_ldif(users: Iterable[LdapUser], *, hashed: bool = True) -> str:
    """inetOrgPerson entries; ``hashed=False`` stores plain-text passwords (slapd accepts both)."""
    parts = []
    for user in users:
        attrs = [
            ("objectClass", "inetOrgPerson"),
            ("uid", user.uid),
            ("cn", user.uid),
            ("sn", user.uid.split()[-1] if user.uid.strip() else user.uid),
            ("userPassword", ssha(user.password) if hashed else user.password),
        ]
        if user.mail:
            attrs.append(("mail", user.mail))
        parts.append(ldif_entry(user.dn, attrs))
    return "".join(parts)


def group_ldif(name: str, members: Iterable[str], ou: str = GROUPS_DN) -> str:
    """A groupOfNames ``cn=name`` with member DNs (a group DN nests that group)."""
    attrs = [("objectClass", "groupOfNames"), ("cn", name)]
    attrs.extend(("member", dn) for dn in members)
    return ldif_entry(f"cn={name},{ou}", attrs)


#: A sliver of Active Directory's schema, with AD's own OIDs where AD has them: the ``group``
#: object class, and ``memberOf`` as a plain attribute that the test writes on users (AD
#: computes it; only direct groups, as in AD), through an auxiliary class from OpenLDAP's
#: experimental arc. Enough to put AD-shaped groups in a real slapd (without the memberof
#: overlay, which defines its own memberOf).
AD_SCHEMA = """\
attributetype ( 1.2.840.113556.1.2.102 NAME 'memberOf'
    EQUALITY distinguishedNameMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.12 )
objectclass ( 1.2.840.113556.1.5.8 NAME 'group' SUP top STRUCTURAL
    MUST cn MAY ( member $ description ) )
objectclass ( 1.3.6.1.4.1.4203.666.11.99.1 NAME 'adLikeUser' SUP top AUXILIARY
    MAY memberOf )
"""


def write_ad_schema(directory: Path) -> Path:
    """:data:`AD_SCHEMA` as a file to pass to ``Slapd(schemas=...)``."""
    path = directory / "ad-like.schema"
    path.write_text(AD_SCHEMA)
    return path


def ad_group_ldif(name: str, members: Iterable[str], ou: str = GROUPS_DN) -> str:
    """An Active Directory style group (objectClass group) ``cn=name`` (needs AD_SCHEMA)."""
    attrs = [("objectClass", "group"), ("cn", name)]
    attrs.extend(("member", dn) for dn in members)
    return ldif_entry(f"cn={name},{ou}", attrs)


def ad_user_ldif(user: LdapUser, member_of: Iterable[str]) -> str:
    """A user whose entry carries memberOf, as AD's users do (needs AD_SCHEMA)."""
    entry = user_ldif([user]).replace(
        "objectClass: inetOrgPerson\n", "objectClass: inetOrgPerson\nobjectClass: adLikeUser\n"
    )
    return entry[:-1] + "".join(f"{ldif_line('memberOf', dn)}\n" for dn in member_of) + "\n"


def ou_ldif(dn: str) -> str:
    name = dn.split(",", 1)[0].split("=", 1)[1]
    return ldif_entry(dn, [("objectClass", "organizationalUnit"), ("ou", name)])


def base_ldif() -> str:
    """The suffix, the three OUs and the service account (no users)."""
    entries = [
        ldif_entry(
            SUFFIX,
            [
                ("objectClass", "dcObject"),
                ("objectClass", "organization"),
                ("dc", "example"),
                ("o", "Example Org"),
            ],
        )
    ]
    for ou in ("people", "staff", "services"):
        entries.append(
            ldif_entry(f"ou={ou},{SUFFIX}", [("objectClass", "organizationalUnit"), ("ou", ou)])
        )
    entries.append(
        ldif_entry(
            SERVICE_DN,
            [
                ("objectClass", "organizationalRole"),
                ("objectClass", "simpleSecurityObject"),
                ("cn", "radmfa"),
                ("userPassword", ssha(SERVICE_PASSWORD)),
            ],
        )
    )
    return "".join(entries)


_SLAPD_CONF = """\
# Written by tests/support/slapd.py
include {schema}/core.schema
include {schema}/cosine.schema
include {schema}/inetorgperson.schema
include {schema}/nis.schema
{extra_schemas}
pidfile {workdir}/slapd.pid
argsfile {workdir}/slapd.args
modulepath {modules}
moduleload back_mdb
{modules_extra}
{tls}
# The root DSE is readable by anyone (readiness probes use it).
access to dn.base="" by * read
access to dn.base="cn=Subschema" by * read

database mdb
maxsize 1073741824
suffix "{suffix}"
rootdn "{root_dn}"
rootpw {root_pw}
directory {data}
index objectClass eq
index uid eq
index member eq
{overlays}

# Anyone may try a bind; nobody reads password hashes.
access to attrs=userPassword
    by anonymous auth
    by self auth
    by * none
# Only the service account searches; users see their own entry; anonymous sees nothing.
access to *
    by dn.exact="{service_dn}" read
    by self read
    by * none
"""


_live: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_live):
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    _live.clear()


class SlapdError(RuntimeError):
    pass


class Slapd:
    """One slapd instance: its config, data and log under ``workdir``; one loopback port.

    The fixture users (``FIXTURE_USERS``) are loaded unless ``users=()`` is given. More can be
    added with :meth:`add_users` (``slapadd -q`` while stopped, which is the fast path for bulk
    loads; ``ldapadd`` while running).
    """

    def __init__(
        self,
        workdir: str | Path,
        *,
        users: Iterable[LdapUser] = FIXTURE_USERS,
        host: str = "127.0.0.1",
        port: int | None = None,
        debug: str = "stats",
        tls_cert: str | Path | None = None,
        tls_key: str | Path | None = None,
        ldaps: bool = False,
        overlays: Iterable[str] = (),
        schemas: Iterable[str | Path] = (),
    ) -> None:
        """``overlays``: slapd overlays to load, e.g. ``memberof`` (maintains memberOf when
        groups change while slapd runs) or ``ppolicy`` (its default policy is
        ``cn=default,ou=policies``, which the test adds). ``schemas``: more schema files to
        include after the standard ones (e.g. :data:`AD_SCHEMA`)."""
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port if port is not None else free_port("tcp", host)
        self.debug = debug
        if ldaps and not tls_cert:
            raise ValueError("ldaps needs tls_cert and tls_key")
        #: The ldaps:// port when ``ldaps=True`` (StartTLS works on the plain port with a cert).
        self.ldaps_port = free_port("tcp", host) if ldaps else None
        tls = ""
        if tls_cert:
            tls = f"TLSCertificateFile {tls_cert}\nTLSCertificateKeyFile {tls_key}\n"
        self.conf_path = self.workdir / "slapd.conf"
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "slapd.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: BinaryIO | None = None
        self.data_dir.mkdir(exist_ok=True)
        overlays = tuple(overlays)
        overlay_lines = []
        for name in overlays:
            overlay_lines.append(f"overlay {name}")
            if name == "ppolicy":
                overlay_lines.append(f'ppolicy_default "cn=default,{POLICIES_DN}"')
        self.conf_path.write_text(
            _SLAPD_CONF.format(
                schema=SCHEMA_DIR,
                extra_schemas="".join(f"include {path}\n" for path in schemas),
                modules=MODULE_DIR,
                modules_extra="\n".join(f"moduleload {name}" for name in overlays),
                overlays="\n".join(overlay_lines),
                workdir=self.workdir,
                tls=tls,
                data=self.data_dir,
                suffix=SUFFIX,
                root_dn=ROOT_DN,
                root_pw=ssha(ROOT_PASSWORD),
                service_dn=SERVICE_DN,
            )
        )
        self.add_ldif(base_ldif() + user_ldif(users))

    # -- addresses -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"ldap://{self.host}:{self.port}"

    @property
    def ldaps_url(self) -> str:
        if self.ldaps_port is None:
            raise ValueError("this slapd was made without ldaps=True")
        return f"ldaps://{self.host}:{self.ldaps_port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Start slapd and return once it answers an LDAP bind (polled every 50 ms)."""
        if self.running:
            return
        listen = f"{self.url}/" + (f" {self.ldaps_url}/" if self.ldaps_port else "")
        command = [SLAPD, "-d", self.debug, "-h", listen, "-f", str(self.conf_path)]
        setpriv = shutil.which("setpriv")
        if setpriv:
            command = [setpriv, "--pdeathsig", "KILL", "--", *command]
        self._log_file = open(self.log_path, "ab")  # closed in _reap()
        self._proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        _live.add(self._proc)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.kill()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_error = "not polled yet"
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise SlapdError(
                    f"slapd exited with {self._proc.returncode} during start-up:\n{self.log_tail()}"
                )
            ok, last_error = self.probe()
            if ok:
                return
            if time.monotonic() >= deadline:
                raise SlapdError(
                    f"slapd at {self.url} not ready after {timeout}s ({last_error}):\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.05)

    def probe(self, timeout: float = 1.0) -> tuple[bool, str]:
        """One anonymous bind: (True, "") when slapd answers, else (False, why)."""
        import ldap3

        server = ldap3.Server(
            self.host, port=self.port, get_info=ldap3.NONE, connect_timeout=timeout
        )
        conn = ldap3.Connection(
            server,
            client_strategy=ldap3.SAFE_SYNC,
            receive_timeout=max(1, int(timeout)),
            raise_exceptions=False,
        )
        try:
            status, result, _, _ = conn.bind(read_server_info=False)
        except Exception as exc:  # any failure means "not yet"
            return False, f"{type(exc).__name__}: {exc}"
        finally:
            try:
                conn.unbind()
            except Exception:  # best effort
                pass
        if status is True and result and result.get("result") == 0:
            return True, ""
        return False, f"anonymous bind answered {result!r}"

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful shutdown (SIGTERM); data and port are kept for :meth:`start`."""
        if self._proc is None:
            return
        terminate(self._proc, timeout)
        self._reap()

    def kill(self) -> None:
        """SIGKILL, as a crash would; the mdb data survives and :meth:`start` works again."""
        if self._proc is None:
            return
        kill(self._proc)
        self._reap()

    def restart(self, timeout: float = 10.0) -> None:
        self.stop()
        self.start(timeout)

    def _reap(self) -> None:
        if self._proc is not None:
            _live.discard(self._proc)
        self._proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def close(self) -> None:
        self.kill()

    def __enter__(self) -> Slapd:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- data ------------------------------------------------------------------------------

    def add_ldif(self, ldif: str) -> None:
        """Add entries: ``slapadd -q`` when stopped (fast, for bulk), ``ldapadd`` when running."""
        with tempfile.NamedTemporaryFile(
            "w", suffix=".ldif", dir=self.workdir, delete=False, encoding="utf-8"
        ) as handle:
            handle.write(ldif)
            path = handle.name
        try:
            if self.running:
                command = [
                    LDAPADD, "-x", "-H", self.url, "-D", ROOT_DN, "-w", ROOT_PASSWORD, "-f", path,
                ]  # fmt: skip
            else:
                command = [SLAPADD, "-q", "-f", str(self.conf_path), "-l", path]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SlapdError(
                    f"{Path(command[0]).name} failed ({done.returncode}): "
                    f"{done.stderr.strip() or done.stdout.strip()}"
                )
        finally:
            os.unlink(path)

    def modify(self, ldif: str) -> None:
        """``ldapmodify`` as the root DN (slapd must be running)."""
        done = subprocess.run(
            [LDAPMODIFY, "-x", "-H", self.url, "-D", ROOT_DN, "-w", ROOT_PASSWORD],
            input=ldif,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SlapdError(f"ldapmodify failed ({done.returncode}): {done.stderr.strip()}")

    def add_users(self, users: Iterable[LdapUser], *, hashed: bool = True) -> None:
        """Bulk-add users; call before :meth:`start` for large sets (10,000 in a few seconds)."""
        self.add_ldif(user_ldif(users, hashed=hashed))

    # -- log -------------------------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def binds(self) -> list[str]:
        """Bind DNs slapd logged so far (``-d stats``), anonymous binds as ``""``.

        slapd writes the line when the request arrives, so poll briefly after the client is done
        when counting (see :meth:`wait_for_binds`).
        """
        return re.findall(r' BIND dn="([^"]*)" method=', self.log_text())

    def wait_for_binds(self, count: int, timeout: float = 2.0) -> list[str]:
        """The bind DNs once at least ``count`` are logged, or what is there at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.binds()
            if len(found) >= count or time.monotonic() >= deadline:
                return found
            time.sleep(0.02)
