"""The job/plugin info parser: encodings, indexed keys, and every error it reports."""
from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from atomic_publish.deadline_plugin.jobfiles import (
    MAX_VALUE_BYTES, JobFileError, read_job_info, read_key_value_file, write_key_value_file)

TEXT = ("Plugin=AtomicPublish\r\nName=shot 010 = final\r\n\r\n"
        "ExtraInfoKeyValue0=Project=Ünïcode show\r\nEnvironmentKeyValue0=PATHS=a=b\r\n"
        "EnvironmentKeyValue1=FOO=bar\r\nOutputFilename1=/b.exr\r\nOutputFilename0=/a.exr\r\n"
        "OutputFilename0Tile=/tile.exr\r\n")


@pytest.mark.parametrize("encode", [
    lambda t: t.encode("utf-8"),
    lambda t: codecs.BOM_UTF8 + t.encode("utf-8"),
    lambda t: codecs.BOM_UTF16_LE + t.encode("utf-16-le"),
    lambda t: codecs.BOM_UTF16_BE + t.encode("utf-16-be"),
], ids=["utf8", "utf8-bom", "utf16le-bom", "utf16be-bom"])
def test_encodings_parse_the_same(tmp_path: Path, encode) -> None:
    path = tmp_path / "job.job"
    path.write_bytes(encode(TEXT))
    info = read_job_info(path)
    assert info["plugin"] == "AtomicPublish"  # case-insensitive lookup
    assert info["Name"] == "shot 010 = final"  # split on the first '='
    assert info.indexed("ExtraInfoKeyValue") == {"Project": "Ünïcode show"}
    assert info.indexed("environmentkeyvalue") == {"PATHS": "a=b", "FOO": "bar"}
    assert info.indexed_values("OutputFilename") == ["/a.exr", "/b.exr"]
    assert list(info)[:2] == ["Plugin", "Name"]


def test_booleans_and_integers(tmp_path: Path) -> None:
    path = tmp_path / "p.job"
    path.write_text("A=TRUE\nB=false\nC=yes\nN=12\nM=x\n")
    info = read_key_value_file(path)
    assert info.get_bool("A") is True and info.get_bool("b") is False and info.get_bool("missing", True)
    assert info.get_int("N") == 12 and info.get_int("missing", 7) == 7
    with pytest.raises(JobFileError, match="C='yes' is not true or false"):
        info.get_bool("C")
    with pytest.raises(JobFileError, match="not an integer"):
        info.get_int("M")


@pytest.mark.parametrize("data, line, problem", [
    (b"", None, "empty"),
    (b"\n  \n\r\n", None, "empty"),
    (b"Plugin=X\nName=\x00\x01\x02", 2, "NUL byte"),
    (b"\xff\xfeP\x00A", None, "utf-16-le"),  # UTF-16 BOM, odd number of bytes
    (b"Plugin=X\nName=\x1b[31mred\n", 2, "control character"),
    (b"Plugin=X\nName=caf\xe9\n", 2, "not valid UTF-8"),
    (b"Plugin=X\njust a line\n", 2, "no '='"),
    (b"Plugin=X\n=value\n", 2, "empty key"),
    (b"Plugin=X\nName=a\nname=b\n", 3, "duplicate key name"),
    (b"Plugin=X\nBig=" + b"x" * (MAX_VALUE_BYTES + 1) + b"\n", 2, "longer than"),
    (b"Name=no plugin\n", None, "no Plugin"),
    (b"Plugin=\n", None, "no Plugin"),
], ids=["empty", "blank", "nul", "bad-utf16", "garbage", "latin1", "no-equals", "empty-key",
        "duplicate", "too-long", "no-plugin", "empty-plugin"])
def test_errors_name_file_line_and_problem(tmp_path: Path, data: bytes, line: int | None, problem: str) -> None:
    path = tmp_path / "bad.job"
    path.write_bytes(data)
    with pytest.raises(JobFileError) as caught:
        read_job_info(path)
    assert caught.value.path == str(path)
    assert caught.value.line == line
    assert problem.lower() in str(caught.value).lower()
    assert str(path) in str(caught.value)


def test_missing_file_is_a_job_file_error(tmp_path: Path) -> None:
    with pytest.raises(JobFileError, match="cannot read"):
        read_key_value_file(tmp_path / "nope.job")


def test_indexed_value_without_name_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "j.job"
    path.write_text("Plugin=X\nExtraInfoKeyValue0=novalue\n")
    with pytest.raises(JobFileError, match="not Name=Value"):
        read_job_info(path).indexed("ExtraInfoKeyValue")


def test_writer_round_trip_utf8_without_bom(tmp_path: Path) -> None:
    path = tmp_path / "out.job"
    write_key_value_file(path, {"Plugin": "AtomicPublish", "Blacklist": "", "Flag": True, "N": 3,
                                "Name": "Ünï = x"})
    data = path.read_bytes()
    assert not data.startswith(codecs.BOM_UTF8)
    info = read_job_info(path)
    assert dict(info.items()) == {"Plugin": "AtomicPublish", "Blacklist": "", "Flag": "True", "N": "3",
                                  "Name": "Ünï = x"}


@pytest.mark.parametrize("items", [{"A": "x\ny"}, {"A=B": "x"}, {"": "x"}, [("A", "1"), ("a", "2")]])
def test_writer_refuses_what_the_reader_would_misread(tmp_path: Path, items) -> None:
    with pytest.raises(ValueError):
        write_key_value_file(tmp_path / "out.job", items)
    assert not (tmp_path / "out.job").exists()
