"""bench.ab: variants parse strictly, overrides land in the right config section, and a variant
from another revision runs that revision's package."""

from __future__ import annotations

import os

import pytest
import yaml

from bench.ab import Variant, parse_variant, summarize
from bench.run import RadmfaServer, Row, apply_overrides


def test_a_variant_names_label_revision_mode_and_typed_overrides():
    v = parse_variant("base@HEAD~1:cached:audit.enabled=false;ldap.pool_size=32;x.y=0.1s")
    assert v == Variant(
        "base", "cached", {"audit.enabled": False, "ldap.pool_size": 32, "x.y": "0.1s"}, "HEAD~1"
    )
    assert parse_variant("new:search") == Variant("new", "search", {}, None)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("nomode", "expected LABEL"),
        (":cached", "expected LABEL"),
        ("a:fast", "mode must be one of"),
        ("a:cached:audit.enabled", "is not KEY=VALUE"),
        ("a:cached:=1", "is not KEY=VALUE"),
    ],
)
def test_a_malformed_variant_says_what_is_wrong(text, problem):
    with pytest.raises(ValueError, match=problem):
        parse_variant(text)


def test_dotted_overrides_create_and_replace_sections():
    config = {"ldap": {"servers": ["ldap://x"], "timeout": 3}}
    apply_overrides(config, {"ldap.timeout": 5, "audit.flush_interval": "0.1s", "top": 1})
    assert config == {
        "ldap": {"servers": ["ldap://x"], "timeout": 5},
        "audit": {"flush_interval": "0.1s"},
        "top": 1,
    }


class _NoSlapd:
    url = "ldap://127.0.0.1:1"


def test_a_server_from_another_tree_puts_that_tree_first_and_writes_the_overrides(tmp_path):
    source = tmp_path / "tree" / "daemon"
    server = RadmfaServer(
        tmp_path / "w",
        _NoSlapd(),  # type: ignore[arg-type]
        [],
        mode="cached",
        workers=2,
        label="base",
        overrides={"audit.enabled": False},
        source=source,
    )
    assert server.label == "base"
    assert server.env["PYTHONPATH"].split(os.pathsep)[0] == str(source)
    written = yaml.safe_load(server.config_path.read_text())
    assert written["audit"] == {"enabled": False}
    assert written["radius"] == {"workers": 2} and "user_cache" in written["ldap"]


def _row(server: str, rate: float, p99: float) -> Row:
    return Row(server, "ab", 64, 100, rate, rate, 1.0, 2.0, p99, 0, 0, 0.3, 0.1, 80.0)


def test_the_summary_gives_medians_and_the_ratio_to_the_first_variant():
    variants = [Variant("a", "cached", {}), Variant("b", "cached", {})]
    rows = {
        "a": [_row("a", 1000, 9.0), _row("a", 2000, 1.0), _row("a", 3000, 2.0)],
        "b": [_row("b", 3000, 1.0), _row("b", 3000, 1.0), _row("b", 9000, 5.0)],
    }
    a, b = summarize(variants, rows)
    assert (a["answers_per_s"], a["ratio"], a["p99_ms"]) == (2000, 1.0, 2.0)
    assert (b["answers_per_s"], b["ratio"], b["p99_ms"]) == (3000, 1.5, 1.0)
