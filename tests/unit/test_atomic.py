"""Atomic file replacement: a failed write leaves the old file whole; nothing planted
beside the target is written through; results are strict JSON."""

from __future__ import annotations

import doctest
import json
import math
import os
import re

import numpy as np
import pytest

from featurestore import atomic
from featurestore.atomic import atomic_write, finite_json, read_json, write_json
from featurestore.errors import SermtlError


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path) -> None:
    target = tmp_path / "results.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as handle:
            handle.write("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    with atomic_write(target) as handle:
        handle.write("new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_a_link_planted_at_the_old_temporary_name_is_not_followed(tmp_path) -> None:
    victim = tmp_path / "notes.txt"
    victim.write_text("precious")
    target = tmp_path / "config.json"
    os.symlink(victim, tmp_path / "config.json.tmp")  # the fixed name earlier versions used
    write_json(target, {"a": 1})
    assert victim.read_text() == "precious"
    assert read_json(target) == {"a": 1}


def test_a_link_at_the_target_is_replaced_not_written_through(tmp_path) -> None:
    victim = tmp_path / "notes.txt"
    victim.write_text("precious")
    target = tmp_path / "metrics.json"
    os.symlink(victim, target)
    write_json(target, {"wa": 50.0})
    assert victim.read_text() == "precious"
    assert not target.is_symlink() and read_json(target) == {"wa": 50.0}


def test_written_files_get_the_usual_permissions(tmp_path) -> None:
    target = write_json(tmp_path / "x.json", {})
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_non_finite_numbers_become_null_so_the_file_is_strict_json(tmp_path) -> None:
    path = write_json(
        tmp_path / "history.json",
        [{"loss": float("nan"), "uwa": np.float32(50.5), "n": np.int64(3), "inf": math.inf, "ok": True}],
    )
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard constant {c}")) == [
        {"loss": None, "uwa": 50.5, "n": 3, "inf": None, "ok": True}
    ]
    assert finite_json((1, np.bool_(True), {2: np.float64("nan")})) == [1, True, {"2": None}]


@pytest.mark.parametrize(
    "content, expect, message",
    [
        (b"{not json", dict, "not valid JSON"),
        (b"\xff\xfe\x00", dict, "not valid JSON"),
        (b"[1, 2]", dict, "holds a list, expected a dict"),
    ],
)
def test_damaged_json_files_are_one_line_naming_the_file(tmp_path, content, expect, message) -> None:
    path = tmp_path / "metrics.json"
    path.write_bytes(content)
    with pytest.raises(SermtlError, match=rf"^{re.escape(str(path))} .*{re.escape(message)}") as error:
        read_json(path, expect)
    assert "\n" not in str(error.value)


def test_writing_into_a_missing_or_read_only_folder_is_one_line(tmp_path) -> None:
    with pytest.raises(SermtlError, match=rf"cannot write\b.*{re.escape(str(tmp_path / 'missing' / 'x.json'))}"):
        write_json(tmp_path / "missing" / "x.json", {})


def test_doctest() -> None:
    result = doctest.testmod(atomic)
    assert result.attempted > 0 and result.failed == 0
