"""Atomic file replacement: a failed write leaves the old file whole."""

from __future__ import annotations

import doctest

import pytest

from featurestore import atomic
from featurestore.atomic import atomic_path


def test_a_failed_write_keeps_the_old_file(tmp_path) -> None:
    target = tmp_path / "results.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and not tmp.exists()


def test_doctest() -> None:
    result = doctest.testmod(atomic)
    assert result.attempted > 0 and result.failed == 0
