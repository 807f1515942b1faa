"""Decoding ahead of the extractor is bounded in audio seconds, not in batches: the next
batch is always decoded while one is extracted, and more only while the batches ahead hold
at most ``AHEAD_SECONDS``; the batches come out in order, and an abandoned run cancels the rest."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from featurestore import pipeline
from featurestore.manifest import Manifest


@pytest.mark.parametrize(
    ("seconds", "ahead_at_most"),
    [(300.0, 2), (100.0, 6), (6000.0, 1)],  # short batches: 600 s ahead; one long batch: just the next
)
def test_audio_decoded_ahead_stays_within_its_bound(monkeypatch, seconds: float, ahead_at_most: int) -> None:
    ids = [f"u{i}" for i in range(12)]
    rows = Manifest([{"utt_id": u, "path": f"/x/{u}.wav", "emotion": "sad", "speaker": "s"} for u in ids])
    submitted: list[str] = []

    class Submitted:  # the manifest as _prefetch sees it: a row looked up when its decoding is queued
        def __getitem__(self, utt_id: str) -> dict:
            submitted.append(utt_id)
            return rows[utt_id]

    manifest = Submitted()

    def load(row: dict, max_duration: float | None):
        return np.zeros(1, np.float32), (None, None)

    monkeypatch.setattr(pipeline, "_load_row", load)
    batches = [[u] for u in ids]
    order = []
    for k, (batch, futures) in enumerate(
        pipeline._prefetch(manifest, batches, dict.fromkeys(ids, seconds), workers=2, max_duration=None)
    ):
        assert [f.result()[0].shape for f in futures] == [(1,)]
        ahead = len(submitted) - (k + 1)
        assert ahead <= ahead_at_most and (ahead >= 1 or k == len(ids) - 1)
        order += batch
    assert order == ids


def test_an_abandoned_run_cancels_what_was_queued(monkeypatch) -> None:
    ids = [f"u{i}" for i in range(6)]
    manifest = Manifest([{"utt_id": u, "path": f"/x/{u}.wav", "emotion": "sad", "speaker": "s"} for u in ids])
    started: list[str] = []
    second, release = threading.Event(), threading.Event()

    def load(row: dict, max_duration: float | None):
        started.append(row["utt_id"])
        if len(started) > 1:
            second.set()
            release.wait(5)  # the second decode is still running when the run is abandoned
        return np.zeros(1, np.float32), (None, None)

    monkeypatch.setattr(pipeline, "_load_row", load)
    batches = pipeline._prefetch(manifest, [[u] for u in ids], dict.fromkeys(ids, 100.0), workers=1, max_duration=None)
    _, futures = next(batches)  # all six queued (600 s ahead), the first decoded
    assert futures[0].result()[0].shape == (1,)
    assert second.wait(5)
    threading.Timer(0.2, release.set).start()
    batches.close()  # a failure in the extractor closes the generator: the queued decodes are cancelled
    assert started == ["u0", "u1"]
