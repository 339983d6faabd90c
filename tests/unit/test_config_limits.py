"""Hostile YAML: aliases that expand without end and nesting deeper than Python's stack.

Both are refused while the file is composed, as one ``FILE:LINE`` problem, before any section
(``otp.plugins`` walks whatever it is given) sees an expanded value.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from radmfa.cli.main import EXIT_USAGE, main
from radmfa.config.load import MAX_DEPTH, MAX_NODES

BASE = """\
clients:
  - name: vpn
    address: 127.0.0.0/8
    secret: a-long-random-secret-0001
local_users:
  path: users
"""

#: The classic "billion laughs": nine levels of nine aliases, 10**9 strings once expanded.
BILLION_LAUGHS = 'l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 9)
)


def check_config(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = tmp_path / "radmfa.yaml"
    path.write_text(text, encoding="utf-8")
    code = main(["-c", str(path), "check-config"])
    return code, capsys.readouterr().err


def bomb_under_plugins() -> str:
    lines = ["otp:", "  plugins:", "    laughs:"]
    lines += ["      " + line for line in BILLION_LAUGHS.splitlines()]
    return BASE + "\n".join(lines) + "\n"


def test_a_billion_laughs_in_otp_plugins_is_one_problem_with_its_line(tmp_path, capsys):
    text = bomb_under_plugins()

    code, err = check_config(tmp_path, text, capsys)

    assert code == EXIT_USAGE
    problems = err.strip().splitlines()
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{tmp_path / 'radmfa.yaml'}:")
    assert f"more than {MAX_NODES} values" in problems[0]
    line = int(problems[0].split(":")[1])
    assert "*" in text.splitlines()[line - 1]  # the alias where the count ran over


def test_an_alias_used_more_often_than_the_limit_allows_is_refused(tmp_path, capsys):
    """Each use counts: one anchored list of 100 values used 300 times is 30,000 values."""
    anchor = "[" + ",".join(["x"] * 100) + "]"
    uses = "\n".join(f"      k{i}: *big" for i in range(300))
    text = BASE + f"otp:\n  plugins:\n    p:\n      big: &big {anchor}\n{uses}\n"

    code, err = check_config(tmp_path, text, capsys)

    assert code == EXIT_USAGE
    assert f"more than {MAX_NODES} values" in err


def test_ten_thousand_levels_of_nesting_are_one_problem_not_a_traceback(tmp_path, capsys):
    text = BASE + "otp:\n  plugins:\n    deep: " + "[" * 10_000 + "]" * 10_000 + "\n"

    code, err = check_config(tmp_path, text, capsys)

    assert code == EXIT_USAGE
    problems = err.strip().splitlines()
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{tmp_path / 'radmfa.yaml'}:{len(BASE.splitlines()) + 3}: ")
    assert f"more than {MAX_DEPTH} levels deep" in problems[0]


def test_deep_nesting_of_mappings_anywhere_is_refused(tmp_path, capsys):
    nested = "".join("  " * i + f"k{i}:\n" for i in range(200))
    code, err = check_config(tmp_path, BASE + "policy:\n" + "  " + nested, capsys)

    assert code == EXIT_USAGE
    assert f"more than {MAX_DEPTH} levels deep" in err


def test_nesting_built_from_aliases_counts_its_expanded_depth(tmp_path, capsys):
    levels = ["a0: &a0 [x]"] + [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, MAX_DEPTH + 2)]
    text = BASE + "otp:\n  plugins:\n    p:\n" + "".join(f"      {line}\n" for line in levels)

    code, err = check_config(tmp_path, text, capsys)

    assert code == EXIT_USAGE
    assert f"more than {MAX_DEPTH} levels deep" in err


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path, capsys):
    """``&a [*a]`` is a list that contains itself: walking it would never end."""
    code, err = check_config(tmp_path, BASE + "otp:\n  plugins:\n    p: &a [*a]\n", capsys)

    assert code == EXIT_USAGE
    assert "refers to a value that contains it" in err


def test_ordinary_anchors_and_merge_keys_still_work(tmp_path, capsys):
    text = BASE + (
        "otp:\n"
        "  plugins:\n"
        "    one: &shared {url: https://a.example, timeout: 5}\n"
        "    two:\n"
        "      <<: *shared\n"
        "      timeout: 9\n"
    )

    code, err = check_config(tmp_path, text, capsys)

    assert code == 0, err
