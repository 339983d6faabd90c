"""Rendering: Jinja2 templates shipped in the package, every value escaped, and the QR code.

Autoescaping is on for every template (``select_autoescape`` with HTML as the default), and
undefined names are errors rather than empty strings. The only markup a page takes from
code is the QR code's SVG, which segno writes from the URI (no text of the user in it
besides what the URI encodes, and that is percent-encoded).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any

import segno
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

__all__ = ["STYLESHEET", "Pages", "qr_svg"]


def _stylesheet() -> bytes:
    return files("radmfa.portal").joinpath("static/portal.css").read_bytes()


#: The one stylesheet (served at /static/portal.css).
STYLESHEET = _stylesheet()


def qr_svg(uri: str) -> Markup:
    """The QR code of ``uri`` as inline SVG: nothing for the CSP to allow (no image URL, no
    data: URI). Error correction M, never a Micro QR (apps cannot read those)."""
    code = segno.make_qr(uri, error="m")
    svg = code.svg_inline(
        scale=5, border=4, dark="#111", light="#fff", title="QR code", omitsize=True
    )
    return Markup(svg)  # noqa: S704 - segno's own SVG of a percent-encoded URI


def _when(ts: float | None) -> str:
    if ts is None or not math.isfinite(ts):
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


class Pages:
    """The template environment; :meth:`render` gives a page's bytes."""

    def __init__(self, product: str = "radmfa") -> None:
        self.env = Environment(
            loader=PackageLoader("radmfa.portal", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["when"] = _when
        self.product = product

    def render(self, template: str, **values: Any) -> bytes:
        values.setdefault("product", self.product)
        values.setdefault("csrf", None)
        values.setdefault("signed_in", None)
        values.setdefault("notice", None)
        values.setdefault("error", None)
        return self.env.get_template(template).render(**values).encode("utf-8")
