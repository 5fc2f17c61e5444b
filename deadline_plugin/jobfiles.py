"""Deadline job-info / plugin-info files: the one reader and writer of the project.

Deadline accepts `Key=Value` lines split on the first `=`, written either as UTF-16 LE with a
BOM (Thinkbox's own IronPython submitters) or as UTF-8 (with or without a BOM). Everything that
reads a .job file (submit, the local farm, .dlinit config) goes through here, so a malformed
file fails once, with the file, the line and the problem, instead of somewhere downstream.
"""
from __future__ import annotations

import codecs
import os
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

__all__ = [
    "JobFileError",
    "KeyValueFile",
    "MAX_VALUE_BYTES",
    "parse_key_value_text",
    "read_key_value_file",
    "read_job_info",
    "read_plugin_info",
    "write_key_value_file",
]

MAX_VALUE_BYTES = 64 * 1024
"""Longest accepted value (UTF-8 bytes): a longer one is a wrong file, not a real setting."""

MAX_FILE_BYTES = 16 * 1024 * 1024

_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


class JobFileError(ValueError):
    """A job/plugin info file that Deadline would reject or misread; says where and why."""

    def __init__(self, path: str | os.PathLike[str], line: int | None, problem: str) -> None:
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}:{line}" if line else self.path
        super().__init__(f"{where}: {problem}")


class KeyValueFile(Mapping[str, str]):
    """Parsed Key=Value pairs; lookup is case-insensitive like Deadline, order is kept."""

    def __init__(self, pairs: Iterable[tuple[str, str]], path: str = "<memory>") -> None:
        self.path = path
        self._items: dict[str, tuple[str, str]] = {}
        for key, value in pairs:
            self._items[key.lower()] = (key, value)

    def __getitem__(self, key: str) -> str:
        return self._items[key.lower()][1]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return (original for original, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"KeyValueFile({self.path!r}, {len(self)} keys)"

    def _numbered(self, prefix: str) -> list[tuple[int, str]]:
        pattern = re.compile(re.escape(prefix) + r"(\d+)", re.IGNORECASE)
        found = []
        for original, value in self._items.values():
            match = pattern.fullmatch(original)
            if match:
                found.append((int(match.group(1)), value))
        return sorted(found)

    def indexed(self, prefix: str) -> dict[str, str]:
        """`Prefix<N>=Name=Value` lines (ExtraInfoKeyValue, EnvironmentKeyValue) as {Name: Value}."""
        result: dict[str, str] = {}
        for index, value in self._numbered(prefix):
            name, sep, inner = value.partition("=")
            if not sep or not name.strip():
                raise JobFileError(self.path, None, f"{prefix}{index}={value!r} is not Name=Value")
            result[name.strip()] = inner
        return result

    def indexed_values(self, prefix: str) -> list[str]:
        """`Prefix<N>=Value` lines (OutputFilename0, OutputDirectory0) in index order."""
        return [value for _, value in self._numbered(prefix)]

    def get_bool(self, key: str, default: bool = False) -> bool:
        """Deadline booleans: true/false in any case; anything else is an error, not False."""
        if key not in self or self[key] == "":
            return default
        value = self[key].strip().lower()
        if value in ("true", "false"):
            return value == "true"
        raise JobFileError(self.path, None, f"{key}={self[key]!r} is not true or false")

    def get_int(self, key: str, default: int = 0) -> int:
        """An integer value, with the key named in the error when it is not one."""
        if key not in self or self[key].strip() == "":
            return default
        try:
            return int(self[key].strip())
        except ValueError:
            raise JobFileError(self.path, None, f"{key}={self[key]!r} is not an integer") from None


def _decode(data: bytes, path: str) -> str:
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            body = data[len(bom):]
            try:
                return body.decode(encoding)
            except UnicodeDecodeError as exc:
                raise JobFileError(path, None, f"bytes at offset {exc.start + len(bom)} are not "
                                   f"valid {encoding} (the BOM says {encoding})") from None
    nul = data.find(b"\x00")
    if nul >= 0:
        line = data[:nul].count(b"\n") + 1
        raise JobFileError(path, line, "NUL byte: this is a binary file, or UTF-16 without a BOM "
                           "(write UTF-8, or UTF-16 with a BOM)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise JobFileError(path, line, f"byte 0x{data[exc.start]:02x} is not valid UTF-8 "
                           "(write UTF-8, or UTF-16 with a BOM)") from None


def parse_key_value_text(text: str, path: str = "<memory>") -> KeyValueFile:
    """Parse decoded text; every problem is a JobFileError naming the line."""
    pairs: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        bad = next((c for c in line if c != "\t" and unicodedata.category(c) == "Cc"), None)
        if bad is not None:
            raise JobFileError(path, number, f"control character U+{ord(bad):04X}: binary garbage, "
                               "not a Key=Value line")
        key, sep, value = line.partition("=")
        if not sep:
            raise JobFileError(path, number, f"no '=' in {line[:80]!r}: every line must be Key=Value")
        key, value = key.strip(), value.strip()
        if not key:
            raise JobFileError(path, number, "empty key before '='")
        if len(value.encode("utf-8")) > MAX_VALUE_BYTES:
            raise JobFileError(path, number, f"value of {key} is longer than {MAX_VALUE_BYTES} bytes")
        if key.lower() in seen:
            raise JobFileError(path, number, f"duplicate key {key} (first on line {seen[key.lower()]}; "
                               "keys are case-insensitive)")
        seen[key.lower()] = number
        pairs.append((key, value))
    if not pairs:
        raise JobFileError(path, None, "no Key=Value lines: the file is empty")
    return KeyValueFile(pairs, path)


def read_key_value_file(path: str | os.PathLike[str]) -> KeyValueFile:
    """Read and parse a Key=Value file in any encoding Deadline's submitters write."""
    name = str(path)
    try:
        size = os.path.getsize(name)
        if size > MAX_FILE_BYTES:
            raise JobFileError(name, None, f"{size} bytes: too large for a job file")
        data = Path(name).read_bytes()
    except OSError as exc:
        raise JobFileError(name, None, f"cannot read: {exc.strerror or exc}") from None
    if not data.strip():
        raise JobFileError(name, None, "the file is empty")
    return parse_key_value_text(_decode(data, name), name)


def read_job_info(path: str | os.PathLike[str]) -> KeyValueFile:
    """A job-info file: also requires `Plugin`, the one key Deadline cannot default."""
    info = read_key_value_file(path)
    if not info.get("Plugin", "").strip():
        raise JobFileError(str(path), None, "no Plugin=... line: a job info file must name its plugin")
    return info


def read_plugin_info(path: str | os.PathLike[str]) -> KeyValueFile:
    """A plugin-info file: keys are free-form for the plugin."""
    return read_key_value_file(path)


def write_key_value_file(path: str | os.PathLike[str],
                         items: Mapping[str, object] | Iterable[tuple[str, object]],
                         mode: int = 0o644) -> None:
    """Write UTF-8 without a BOM, refusing anything the reader would reject or split.

    `mode` applies from the file's creation (0o600 for files that may hold a secret).
    """
    pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
    lines = []
    for key, value in pairs:
        text = "True" if value is True else "False" if value is False else str(value)
        if not key or "=" in key or key != key.strip() or any(c in key for c in "\r\n"):
            raise ValueError(f"invalid key {key!r}")
        if any(c in text for c in "\r\n\x00"):
            raise ValueError(f"value of {key} contains a line break or NUL")
        lines.append(f"{key}={text}\n")
    parse_key_value_text("".join(lines), str(path))  # same rules as the reader (duplicates, sizes)
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with open(fd, "w", encoding="utf-8", newline="\n") as handle:
        handle.writelines(lines)
    os.replace(tmp, path)
