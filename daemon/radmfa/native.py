"""Which modules this build runs compiled with mypyc, and how to tell at run time.

``setup.py`` reads ``COMPILED`` (stdlib only, safe to run at build time) and compiles those
modules into C extensions when a C compiler and Python's headers are present, unless
``RADMFA_PURE=1``. The extension sits beside its ``.py`` and Python imports it first, so a
module is compiled or pure per installation, never per call: ``radmfa --version`` says which.
"""

from __future__ import annotations

import importlib.util
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

#: Pure logic on a login's path (no Twisted or zope subclasses, no monkeypatching in
#: production). The same ``.py`` sources run unchanged when the build is pure.
COMPILED: tuple[str, ...] = (
    "radmfa/auth/model.py",
    "radmfa/auth/identity.py",
    "radmfa/auth/policy.py",
    "radmfa/factors/hmacotp.py",
    "radmfa/radius/codec.py",
    "radmfa/radius/dupcache.py",
    "radmfa/store/rules.py",
)


def module_name(path: str) -> str:
    """``radmfa/radius/codec.py`` -> ``radmfa.radius.codec``."""
    return path.removesuffix(".py").replace("/", ".")


def _origin(name: str) -> str:
    """The file module ``name`` is (or would be) loaded from, without running the module."""
    spec = importlib.util.find_spec(name)
    return str(spec.origin) if spec is not None else ""


def is_compiled(name: str) -> bool:
    """Whether module ``name`` is an extension module (mypyc) or plain Python."""
    return _origin(name).endswith(tuple(EXTENSION_SUFFIXES))


def stale(name: str) -> bool:
    """A compiled module whose ``.py`` changed after the build (an editable install that was
    not rebuilt): it runs the old code."""
    if not is_compiled(name):
        return False
    built = Path(_origin(name))
    source = built.parent / (name.rpartition(".")[2] + ".py")
    return source.exists() and source.stat().st_mtime > built.stat().st_mtime


def describe() -> str:
    """One line for ``radmfa --version``: compiled, pure, or partly compiled, and which."""
    names = [module_name(path) for path in COMPILED]
    compiled = [name for name in names if is_compiled(name)]
    if not compiled:
        return "pure Python"
    short = ", ".join(name.removeprefix("radmfa.") for name in compiled)
    kind = "compiled" if len(compiled) == len(names) else "partly compiled"
    line = f"{kind} with mypyc ({short})"
    old = [name.removeprefix("radmfa.") for name in compiled if stale(name)]
    if old:
        line += f"; older than their source, rebuild with pip install -e .: {', '.join(old)}"
    return line
