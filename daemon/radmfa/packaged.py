"""Files shipped with radmfa: the systemd unit and the annotated example configuration.

Their source of truth is the repository's top level (``systemd/radmfa.service``,
``config/radmfa.yaml``). ``setup.py`` copies them into the wheel as ``radmfa/data/`` at build
time; a source checkout (editable install, tests) reads them where they are.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

#: Name in radmfa/data/ -> path in a source checkout, relative to the repository root.
SHIPPED = {
    "radmfa.service": "systemd/radmfa.service",
    "radmfa.yaml": "config/radmfa.yaml",
}


def read_shipped(name: str) -> str:
    """The text of a shipped file, from the installed package or the source checkout."""
    if name not in SHIPPED:
        raise KeyError(name)
    packaged = resources.files("radmfa").joinpath("data", name)
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    checkout = Path(__file__).resolve().parents[2] / SHIPPED[name]
    try:
        return checkout.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{name} is missing from this installation (expected radmfa/data/{name}); "
            "reinstall radmfa from a wheel or a source checkout"
        ) from None
