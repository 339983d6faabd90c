"""Reading YAML with line numbers: the schema-free half of :mod:`radmfa.config`.

``yaml.safe_load`` forgets where each value came from, keeps the last of two duplicate keys and
quietly turns ``no`` into False and ``0644`` into 420. Here the file is only *composed* into
nodes, which keep their position, and every setting is read through a typed accessor. A bad
value records a ``FILE:LINE: key.path: message`` problem and the accessor returns None (the
section builder then falls back to a default), so one pass reports every problem in the file.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import stat
import string
from collections.abc import Callable, Collection
from typing import TypeVar

import yaml

T = TypeVar("T")
R = TypeVar("R")  # what a reader reads
D = TypeVar("D")  # the default when there is nothing to read

DURATION_FORMS = 'seconds (90 or 1.5) or a number with a unit: "90s", "15m", "12h", "30d"'
_DURATION_RE = re.compile(r"([-+]?[0-9]+(?:\.[0-9]+)?)\s*([smhd]?)", re.IGNORECASE)
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
#: Seconds in a day: bounds and defaults counted in days.
DAY = 86400.0

_DAYS_RE = re.compile(r"[0-9]+(?:\.[0-9]+)?")

#: What a YAML 1.1 integer should look like; anything else (0644, 0x1f, 1:30) is a surprise.
_PLAIN_INT_RE = re.compile(r"[-+]?(0|[1-9][0-9_]*)")

_TAG = "tag:yaml.org,2002:"
_MERGE_TAG = _TAG + "merge"


def parse_duration(value: object) -> float:
    """``30`` / ``1.5`` / ``"90"`` / ``"90s"`` / ``"15m"`` / ``"12h"`` / ``"30d"`` -> seconds.

    Raises ValueError, naming the accepted forms, for negatives, booleans and anything else.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration; use {DURATION_FORMS}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION_RE.fullmatch(value.strip())
        if match is None:
            raise ValueError(f"{value!r} is not a duration; use {DURATION_FORMS}")
        seconds = float(match[1]) * _UNIT_SECONDS[match[2].lower()]
    else:
        raise ValueError(f"{value!r} is not a duration; use {DURATION_FORMS}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(
            f"{value!r} is not a duration (it must be 0 or more); use {DURATION_FORMS}"
        )
    return seconds


def format_duration(seconds: float) -> str:
    """``600`` -> ``"10m"``, ``2.5`` -> ``"2.5s"``: durations in messages, as admins write them."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def placeholders(template: str) -> set[str]:
    """The ``{name}`` fields of a ``str.format`` template; ValueError on unmatched braces."""
    fields = set()
    for _text, name, spec, conversion in string.Formatter().parse(template):
        if name is not None:
            fields.add(
                name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            )
    return fields


class Report:
    """Problems and warnings in ``FILE:LINE: key.path: message`` form, in file order."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._errors: list[tuple[int, str]] = []
        self._warnings: list[tuple[int, str]] = []

    def error(self, line: int, path: str, message: str) -> None:
        self._errors.append((line, f"{self.source}:{line}: {path}: {message}"))

    def warn(self, line: int, path: str, message: str) -> None:
        self._warnings.append((line, f"{self.source}:{line}: {path}: {message}"))

    @property
    def errors(self) -> list[str]:
        return [text for _line, text in sorted(self._errors, key=lambda item: item[0])]

    @property
    def warnings(self) -> list[str]:
        return [text for _line, text in sorted(self._warnings, key=lambda item: item[0])]


#: Nesting a configuration never needs; deeper is refused before Python's recursion limit.
MAX_DEPTH = 64
#: Values a configuration never needs, counting an alias's whole value each time it is used.
MAX_NODES = 20_000


class _Loader(yaml.SafeLoader):
    """SafeLoader used only to compose nodes and to build the Python value of single scalars.

    Composing is bounded: an alias shares its anchor's node, so a few lines of aliases of
    aliases ("billion laughs") stand for a billion values once walked, and PyYAML composes
    recursively, so deep nesting would end in a RecursionError. Every node counts, an alias
    as its anchor's whole expanded value each time it appears; past :data:`MAX_NODES` values
    or :data:`MAX_DEPTH` levels (expanded too) composing stops with a marked error.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._expanded = 0
        #: id(node) -> (values it stands for, its height): known once the node is complete.
        self._extent: dict[int, tuple[int, int]] = {}

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:
        event = self.peek_event()
        if self._depth >= MAX_DEPTH:
            raise _limit(f"nested more than {MAX_DEPTH} levels deep", event)
        self._depth += 1
        try:
            # The stub says index is an int: PyYAML also passes a mapping's key node.
            node = super().compose_node(parent, index)  # type: ignore[arg-type]
        finally:
            self._depth -= 1
        if node is None:  # the stub allows it; PyYAML returns a node or raises
            raise _limit("no value where one was expected", event)
        if isinstance(event, yaml.AliasEvent):
            extent = self._extent.get(id(node))
            if extent is None:  # the anchor's node is still open: it would contain itself
                raise _limit(f"alias *{event.anchor} refers to a value that contains it", event)
            size, height = extent
            if self._depth + height > MAX_DEPTH:
                raise _limit(
                    f"alias *{event.anchor} nests the value more than {MAX_DEPTH} levels deep",
                    event,
                )
        else:
            size, height = self._measure(node)
            self._extent[id(node)] = (size, height)
            size = 1  # its children were counted as they were composed
        self._expanded += size
        if self._expanded > MAX_NODES:
            raise _limit(
                f"the file stands for more than {MAX_NODES} values (an alias counts its "
                "anchor's whole value each time it is used)",
                event,
            )
        return node

    def _measure(self, node: yaml.Node) -> tuple[int, int]:
        """(values, height) of a just-composed node, from its children's."""
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            return 1, 1
        extents = [self._extent.get(id(child), (1, 1)) for child in children]
        return (
            1 + sum(size for size, _height in extents),
            1 + max((height for _size, height in extents), default=0),
        )


def _limit(problem: str, event: yaml.Event) -> yaml.composer.ComposerError:
    # The pure-Python composer (SafeLoader) marks events with yaml.error.Mark, never libyaml's.
    mark = event.start_mark if isinstance(event.start_mark, yaml.error.Mark) else None
    return yaml.composer.ComposerError(None, None, problem, mark)


class Document:
    """One YAML text composed to nodes, plus the report its accessors write to.

    ``base_dir`` is where relative paths in the file are resolved from: the file's directory.
    A syntax error is recorded in ``report`` as one problem; there is then nothing to read.
    """

    def __init__(self, text: str, source: str, base_dir: str) -> None:
        self.report = Report(source)
        self.base_dir = base_dir
        #: Secrets written in the file itself (``as_str(secret=True)``), to judge its mode by.
        self.inline_secrets: list[Value] = []
        self._loader = _Loader(text)
        self._node: yaml.Node | None = None
        try:
            self._node = self._loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else 1
            detail = exc.problem or exc.context or "invalid YAML"
            if exc.context and exc.problem:
                detail = f"{exc.problem} ({exc.context})"
            self.report.error(line, "YAML syntax", detail)
        except yaml.YAMLError as exc:
            self.report.error(1, "YAML syntax", str(exc))
        finally:
            self._loader.dispose()

    def root(self, keys: Collection[str]) -> Section | None:
        """The top-level mapping (an empty file reads as an empty one); None if not a mapping."""
        if self._node is None:
            return Section(self, None, "", keys, 1)
        if not isinstance(self._node, yaml.MappingNode):
            # as_section reports what the file holds instead; the top level has no key path.
            return Value(self, self._node, "(top level)", 1).as_section(keys)
        return Section(self, self._node, "", keys, 1)

    def construct(self, node: yaml.ScalarNode) -> object:
        """The Python value the safe loader would give this scalar (may raise YAMLError)."""
        return self._loader.construct_object(node, deep=True)

    def flatten_merges(self, node: yaml.MappingNode) -> None:
        """Inline ``<<: *anchor`` merge keys the way safe_load does (may raise YAMLError)."""
        self._loader.flatten_mapping(node)

    def resolve_path(self, path: str) -> str:
        return os.path.normpath(os.path.join(self.base_dir, path))


def _join(parent: str, key: str) -> str:
    return f"{parent}.{key}" if parent else key


class Value:
    """One node, its key path and the line to blame for it.

    The ``as_*`` readers check the type, record a problem and return None when it is wrong.
    """

    def __init__(self, doc: Document, node: yaml.Node, path: str, key_line: int) -> None:
        self.doc = doc
        self.node = node
        self.path = path
        #: Line of the key this value belongs to (or of the item itself, in a list).
        self.key_line = key_line

    @property
    def line(self) -> int:
        return self.node.start_mark.line + 1

    @property
    def is_null(self) -> bool:
        return isinstance(self.node, yaml.ScalarNode) and self.node.tag == _TAG + "null"

    def error(self, message: str) -> None:
        self.doc.report.error(self.line, self.path, message)

    def warn(self, message: str) -> None:
        self.doc.report.warn(self.line, self.path, message)

    # -- scalars -------------------------------------------------------------------------------

    def _scalar(self) -> tuple[bool, object]:
        """(ok, value) for a scalar node; records a problem for anything else."""
        if not isinstance(self.node, yaml.ScalarNode):
            self.error(f"expected a single value, not {self._describe(None)}")
            return False, None
        try:
            return True, self.doc.construct(self.node)
        except yaml.YAMLError:
            self.error(f"unsupported YAML tag {self.node.tag}")
            return False, None

    def _peek(self) -> object:
        """The scalar's value for a message, or None when there is none to show."""
        if not isinstance(self.node, yaml.ScalarNode):
            return None
        try:
            return self.doc.construct(self.node)
        except yaml.YAMLError:
            return None

    def _describe(self, value: object, *, reveal: bool = True) -> str:
        """How YAML read this node, for messages (``reveal=False`` keeps the value out)."""
        if isinstance(self.node, yaml.MappingNode):
            return "a mapping"
        if isinstance(self.node, yaml.SequenceNode):
            return "a list"
        if value is None:
            return "nothing (null)"
        if isinstance(value, bool):
            return f"the boolean {str(value).lower()}" if reveal else "a boolean (true/false)"
        if isinstance(value, int | float):
            return f"the number {value}" if reveal else "a number"
        if isinstance(value, str):
            return "a string"
        name = type(value).__name__
        return f"the {name} {value}" if reveal else f"a {name}"

    def text(self) -> str | None:
        """The scalar exactly as written, whatever YAML would have made of it."""
        if self.is_null:
            self.error("has no value")
            return None
        if not isinstance(self.node, yaml.ScalarNode):
            self.error(f"expected a single value, not {self._describe(None)}")
            return None
        return str(self.node.value)

    def as_str(self, *, allow_empty: bool = False, secret: bool = False) -> str | None:
        """A YAML string; an unquoted ``no`` or ``0644`` is an error that says to quote it.

        ``secret=True`` keeps the value itself out of the message.
        """
        if self.is_null:
            self.error("has no value")
            return None
        ok, value = self._scalar()
        if not ok:
            return None
        if not isinstance(value, str):
            if secret:
                self.error(
                    f"must be a string, but YAML reads the unquoted value as "
                    f"{self._describe(value, reveal=False)}; put it in quotes"
                )
            else:
                raw = self.node.value
                self.error(
                    f"must be a string, but YAML reads {raw} as {self._describe(value)}; "
                    f'put it in quotes: "{raw}"'
                )
            return None
        if not value and not allow_empty:
            self.error("must not be empty")
            return None
        if secret and all(seen.node is not self.node for seen in self.doc.inline_secrets):
            self.doc.inline_secrets.append(self)
        return value

    def warn_if_others_can_read(self, path: str) -> None:
        """``path`` holds a secret: warn when users beyond its owner and group can read it (a
        warning, not an error, so existing installations keep starting)."""
        mode = readable_by_others(path)
        if mode is not None:
            self.warn(
                f"{path} holds a secret but every user of this host can read it "
                f"(mode {mode:04o}); chmod o-r {path}"
            )

    def as_bool(self) -> bool | None:
        """A real YAML boolean (true/false); not 1, "yes" in quotes or a string."""
        ok, value = self._scalar()
        if not ok:
            return None
        if not isinstance(value, bool):
            self.error(f"must be true or false, not {self._describe(value)}")
            return None
        return value

    def as_int(self, low: int, high: int | None = None) -> int | None:
        """A plain decimal integer in ``low..high`` (booleans and 0644-style octal refused)."""
        ok, value = self._scalar()
        if not ok:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(f"must be a whole number, not {self._describe(value)}")
            return None
        if not _PLAIN_INT_RE.fullmatch(self.node.value):
            self.error(
                f"write plain decimal digits: YAML reads {self.node.value} as {value} "
                "(octal, hexadecimal or base 60)"
            )
            return None
        if value < low or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            self.error(f"must be {bounds} (got {value})")
            return None
        return value

    def as_duration(
        self, low: float, high: float | None = None, *, low_exclusive: bool = False
    ) -> float | None:
        """Seconds from ``90`` / ``1.5`` / ``"90s"`` / ``"15m"`` ..., checked against bounds."""
        ok, value = self._scalar()
        if not ok:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            if not _PLAIN_INT_RE.fullmatch(self.node.value):
                # YAML 1.1 reads 1:30 as 90 and 010 as 8; say so rather than guess.
                self.error(f"YAML reads {self.node.value} as {value}; use {DURATION_FORMS}")
                return None
        elif not isinstance(value, float | str):
            self.error(f"must be a duration, not {self._describe(value)}; use {DURATION_FORMS}")
            return None
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.error(str(exc))
            return None
        too_low = seconds <= low if low_exclusive else seconds < low
        if too_low or (high is not None and seconds > high):
            self.error(f"must be {_duration_bounds(low, high, low_exclusive)} (got {value})")
            return None
        return seconds

    def as_days(self, high_days: float | None = None) -> float | None:
        """Seconds, for settings counted in days: a plain number is days (``30``, ``1.5``,
        ``"30"``); a number with a unit is that duration (``"12h"``, ``"90s"``, ``"30d"``)."""
        ok, value = self._scalar()
        if not ok:
            return None
        hint = 'a number of days (30) or a duration with a unit ("12h", "90s")'
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            self.error(f"must be {hint}, not {self._describe(value)}")
            return None
        if isinstance(value, int) and not _PLAIN_INT_RE.fullmatch(self.node.value):
            self.error(f"YAML reads {self.node.value} as {value}; write {hint}")
            return None
        text = str(value).strip()
        try:
            if _DAYS_RE.fullmatch(text):
                seconds = float(text) * 86400
            else:
                if not _DURATION_RE.fullmatch(text) or not text[-1:].isalpha():
                    raise ValueError(f"{value!r} is not {hint}")
                seconds = parse_duration(text)
        except ValueError as exc:
            self.error(str(exc))
            return None
        if seconds < 0 or (high_days is not None and seconds > high_days * 86400):
            bound = f"0 to {high_days:g} days" if high_days is not None else "0 or more"
            self.error(f"must be {bound} (got {value})")
            return None
        return seconds

    def as_choice(self, choices: Collection[str], *, fold: Callable[[str], str]) -> str | None:
        """One of ``choices`` after ``fold`` (e.g. str.lower), so the input's case is free."""
        text = self.as_str()
        if text is None:
            return None
        folded = fold(text)
        if folded not in choices:
            self.error(f"must be one of {', '.join(choices)} (got {text!r})")
            return None
        return folded

    def as_path(self) -> str | None:
        """A file path; relative paths are taken from the config file's directory."""
        text = self.as_str()
        return None if text is None else self.doc.resolve_path(text)

    # -- collections ---------------------------------------------------------------------------

    def as_list(self) -> list[Value] | None:
        """The items of a YAML list (a null value reads as an empty list)."""
        if self.is_null:
            return []
        if not isinstance(self.node, yaml.SequenceNode):
            self.error(
                f"must be a list (lines starting with '- '), not {self._describe(self._peek())}"
            )
            return None
        return [
            Value(self.doc, item, f"{self.path}[{index}]", item.start_mark.line + 1)
            for index, item in enumerate(self.node.value)
        ]

    def as_mapping(self) -> list[tuple[str, Value]] | None:
        """A mapping whose keys are data, not settings (attribute names): its (key, value)
        pairs in order; a null value reads as empty; duplicate keys are reported."""
        if self.is_null:
            return []
        if not isinstance(self.node, yaml.MappingNode):
            self.error(
                f"must be a mapping of 'name: value' lines, not {self._describe(self._peek())}"
            )
            return None
        pairs: list[tuple[str, Value]] = []
        seen: dict[str, int] = {}
        for key_node, value_node in self.node.value:
            key_line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                self.doc.report.error(key_line, self.path, "keys must be plain names")
                continue
            name = str(key_node.value)
            path = _join(self.path, name)
            if name in seen:
                self.doc.report.error(
                    key_line, path, f"duplicate key (first given on line {seen[name]})"
                )
                continue
            seen[name] = key_line
            pairs.append((name, Value(self.doc, value_node, path, key_line)))
        return pairs

    def as_section(self, keys: Collection[str]) -> Section | None:
        """A mapping with the given known keys (a null value reads as an empty mapping)."""
        if self.is_null:
            return Section(self.doc, None, self.path, keys, self.key_line)
        if not isinstance(self.node, yaml.MappingNode):
            self.error(
                f"must be a mapping of 'key: value' lines, not {self._describe(self._peek())}"
            )
            return None
        return Section(self.doc, self.node, self.path, keys, self.key_line)


def readable_by_others(path: str) -> int | None:
    """The file's permission bits when users other than its owner and group may read it."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return stat.S_IMODE(mode) if mode & stat.S_IROTH else None


def _duration_bounds(low: float, high: float | None, low_exclusive: bool) -> str:
    """``"between 10s and 10m"``, ``"more than 0s and at most 1m"``, ``"at least 1s"``..."""
    lower = (
        f"more than {format_duration(low)}" if low_exclusive else f"at least {format_duration(low)}"
    )
    if high is None:
        return lower
    if low_exclusive:
        return f"{lower} and at most {format_duration(high)}"
    return f"between {format_duration(low)} and {format_duration(high)}"


class Section:
    """A mapping whose keys are all known: unknown and duplicate keys are reported on entry.

    ``node`` is None for a section that is absent or empty; then every read gives the default.
    The typed getters return the default when the key is absent or its value is wrong (the
    problem is already recorded), so builders can always construct their dataclass.
    """

    def __init__(
        self,
        doc: Document,
        node: yaml.MappingNode | None,
        path: str,
        keys: Collection[str],
        line: int,
    ) -> None:
        self.doc = doc
        self.path = path
        self.line = line
        self._values: dict[str, Value] = {}
        if node is not None:
            self._read(node, keys)

    def _read(self, node: yaml.MappingNode, keys: Collection[str]) -> None:
        report = self.doc.report
        explicit = {id(key) for key, _value in node.value if key.tag != _MERGE_TAG}
        if len(explicit) != len(node.value):
            try:  # YAML merge keys (<<: *anchor); the explicit keys win, as in safe_load
                self.doc.flatten_merges(node)
            except yaml.MarkedYAMLError as exc:
                mark = exc.problem_mark or node.start_mark
                report.error(mark.line + 1, self.path or "(top level)", str(exc.problem))
                return
        first_seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                report.error(key_line, self.path or "(top level)", "keys must be plain names")
                continue
            name = str(key_node.value)
            path = _join(self.path, name)
            if name not in keys:
                report.error(key_line, path, _unknown_key_message(name, keys))
                continue
            if name in first_seen and id(key_node) in explicit:
                report.error(
                    key_line, path, f"duplicate key (first given on line {first_seen[name]})"
                )
                continue
            if id(key_node) in explicit:
                first_seen[name] = key_line
            self._values[name] = Value(self.doc, value_node, path, key_line)

    def __contains__(self, key: str) -> bool:
        return key in self._values

    def get(self, key: str) -> Value | None:
        return self._values.get(key)

    def child_path(self, key: str) -> str:
        return _join(self.path, key)

    def key_line(self, key: str) -> int:
        """Line of ``key`` if given, else of the section itself."""
        value = self._values.get(key)
        return value.key_line if value is not None else self.line

    def error(self, key: str, message: str) -> None:
        """A problem about ``key`` (given or missing), blamed on its line or the section's."""
        self.doc.report.error(self.key_line(key), self.child_path(key), message)

    def warn(self, key: str, message: str) -> None:
        self.doc.report.warn(self.key_line(key), self.child_path(key), message)

    def section(self, key: str, keys: Collection[str]) -> Section:
        """A sub-section; absent (or wrong) reads as empty so its defaults apply."""
        value = self._values.get(key)
        section = value.as_section(keys) if value is not None else None
        if section is None:
            return Section(self.doc, None, self.child_path(key), keys, self.key_line(key))
        return section

    def _read_value(self, key: str, default: D, reader: Callable[[Value], R | None]) -> R | D:
        value = self._values.get(key)
        if value is None:
            return default
        result = reader(value)
        return default if result is None else result

    def get_str(self, key: str, default: T, *, secret: bool = False) -> str | T:
        return self._read_value(key, default, lambda value: value.as_str(secret=secret))

    def get_bool(self, key: str, default: bool) -> bool:
        return self._read_value(key, default, Value.as_bool)

    def get_int(self, key: str, default: int, low: int, high: int | None = None) -> int:
        return self._read_value(key, default, lambda value: value.as_int(low, high))

    def get_duration(
        self,
        key: str,
        default: float,
        low: float,
        high: float | None = None,
        *,
        low_exclusive: bool = False,
    ) -> float:
        return self._read_value(
            key, default, lambda value: value.as_duration(low, high, low_exclusive=low_exclusive)
        )

    def get_days(self, key: str, default: float, high_days: float | None = None) -> float:
        """Seconds from :meth:`Value.as_days`."""
        return self._read_value(key, default, lambda value: value.as_days(high_days))

    def get_choice(
        self, key: str, default: str, choices: Collection[str], *, fold: Callable[[str], str]
    ) -> str:
        return self._read_value(key, default, lambda value: value.as_choice(choices, fold=fold))

    def get_path(self, key: str, default: T) -> str | T:
        return self._read_value(key, default, Value.as_path)


def required(section: Section, key: str, message: str) -> Value | None:
    """The value of ``key``, or None after reporting ``missing: message``."""
    value = section.get(key)
    if value is None:
        section.error(key, f"missing: {message}")
    return value


def _unknown_key_message(name: str, keys: Collection[str]) -> str:
    close = difflib.get_close_matches(name, list(keys), n=1)
    if close:
        return f"unknown key (did you mean '{close[0]}'?)"
    return f"unknown key (known keys: {', '.join(keys)})"
