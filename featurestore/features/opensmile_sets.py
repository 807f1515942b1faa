"""openSMILE feature sets (the ``opensmile`` package): eGeMAPSv02 and ComParE_2016.

Two kinds per set, each its own registered feature:

- ``egemaps`` / ``compare``: frame-level low-level descriptors (25 and 65 per frame),
  placed on the frame grid of the spectral features (``1 + n // 160`` frames, frame ``k``
  centred at ``k`` · 10 ms), so a frame store of any feature lines up with ``mfcc``.
  openSMILE's row ``r`` covers the analysis window that starts at ``r`` · 10 ms; it is
  stored as frame ``r + shift``, where ``shift`` is the window centre of row 0 in hops
  (1 for eGeMAPS' 20 ms frames, 3 for ComParE's 60 ms frames). The frames before the
  first row and after the last (where openSMILE's longest, 60 ms, window does not fit)
  repeat the nearest row. Between them the stored values are openSMILE's own.
- ``egemaps-functionals`` / ``compare-functionals``: openSMILE's utterance-level
  functionals (88 and 6373 values), stored as one frame per utterance, for
  ``sermtl baseline --functionals egemaps|compare``.

The store's fingerprint records the opensmile version, the feature set and the level.
Values are float32 and reach 1e6 and more (ComParE energies), so these features are stored
as float32 by default. Audio shorter than 60 ms (openSMILE's longest window) is refused.

``workers=N`` (``sermtl extract --workers N``) computes each batch in ``N`` processes: this
one and a pool of ``N - 1`` workers, each with its own ``opensmile.Smile`` (opensmile is not
thread-safe: its documentation parallelises over processes). The pool takes waves from the
batch's end, this process from its start, until they meet; this process starts at once
while the workers start up, and would otherwise sit idle. Every wave goes through the
serial code whole, so the values are the serial ones bit for bit, in the batch's order;
``workers`` is not part of :meth:`~OpenSmileExtractor.describe`, so a store made with one
worker resumes with four. The pool starts on the first batch (forkserver, or spawn where
there is none; never fork: torch or the audio decoders may run threads), is reused for
every later one, and ends with :meth:`~OpenSmileExtractor.close`, when the extractor is
garbage-collected or the interpreter exits, or, for a worker, when the process that
started it is killed. A script that uses ``workers > 1`` needs the usual
``if __name__ == "__main__":`` guard (the workers import the main module).

A Ctrl-C while openSMILE runs in this process is raised between two waves (see
:func:`interrupts_between_waves`): in its ctypes callback it would be dropped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import multiprocessing
import os
import signal
import sys
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np

from featurestore.errors import ConfigError, SermtlError
from featurestore.features.base import FeatureExtractor

#: openSMILE's longest analysis window (60 ms at 16 kHz): shorter audio gives no frame.
MIN_SAMPLES = 960
HOP = 160
#: Thread-count variables set to 1 in each worker process (for the libraries it loads
#: later; openSMILE itself runs one thread): the processes already use the cores between
#: them, so a library that threads (torch, BLAS) must not multiply that.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def _opensmile():
    try:
        import opensmile
    except ImportError:
        raise SermtlError(
            "the egemaps and compare features need the opensmile package: pip install 'sermtl[opensmile]'"
        ) from None
    return opensmile


@dataclasses.dataclass(frozen=True)
class OpenSmileConfig:
    """What decides the values: the set, the level and the opensmile version."""

    feature_set: str
    feature_level: str
    opensmile_version: str
    sample_rate: int = 16000


class OpenSmileExtractor(FeatureExtractor):
    """One openSMILE feature set at one level; subclasses name the set and the level.

    Parameters
    ----------
    device : str
        Accepted for a uniform constructor; openSMILE runs on the CPU.
    opensmile_version : str or None
        The version a store was made with: refused unless it is the installed one.
    workers : int
        Processes that compute a batch's waves: this one and ``workers - 1`` in a pool (1:
        this one alone). Does not change the values and is not recorded in the store.
    """

    feature_set: str
    feature_level: str

    def __init__(self, device: str = "auto", opensmile_version: str | None = None, workers: int = 1) -> None:
        installed = _opensmile().__version__
        if opensmile_version not in (None, installed):
            raise ConfigError(
                f"the store was made with opensmile {opensmile_version}; opensmile {installed} is installed"
            )
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"--workers must be a whole number of at least 1, got {workers!r}")
        self.config = OpenSmileConfig(self.feature_set, self.feature_level, installed)
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._finalizer: weakref.finalize | None = None

    @classmethod
    def from_description(cls, description: dict[str, Any], device: str = "auto") -> OpenSmileExtractor:
        return cls(device=device, opensmile_version=description.get("opensmile_version"))

    @functools.cached_property
    def smile(self):
        """The ``opensmile.Smile`` of this set and level (built once)."""
        opensmile = _opensmile()
        return opensmile.Smile(
            feature_set=getattr(opensmile.FeatureSet, self.feature_set),
            feature_level=getattr(opensmile.FeatureLevel, self.feature_level),
        )

    @property
    def dim(self) -> int:
        return len(self.smile.feature_names)

    @property
    def num_layers(self) -> int:
        return 1

    @property
    def min_samples(self) -> int:
        return MIN_SAMPLES

    def process(self, wave: np.ndarray) -> pandas.DataFrame:  # noqa: F821
        """openSMILE's own output for one 16 kHz wave ``(samples,)``: a ``(rows, dim)`` table
        indexed by start and end time."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "segment too short": refused before
            return self.smile.process_signal(np.asarray(wave, dtype=np.float32), self.config.sample_rate)

    def extract_batch(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Features of each wave, computed here or (``workers > 1``) here and in the pool.

        With ``workers = N``, this process and the ``N - 1`` processes of the pool share
        the batch: the pool takes waves from its end, this process from its start, each
        wave going to whichever gets to it first. The parent would otherwise sit idle, and
        it starts at once while the pool's processes start up.

        Parameters
        ----------
        waves : sequence of numpy.ndarray, each shape (samples,)
            16 kHz mono waves.

        Returns
        -------
        list of numpy.ndarray, each shape (1, frames, dim)
            float32 features, in the order of ``waves``; the same bits either way.

        Raises
        ------
        SermtlError
            When a worker process died (the pool is ended; the next batch starts another).
            An error raised for a wave (e.g. a ``ValueError`` from openSMILE) is raised as in
            one process: the first bad wave's, in the batch's order; the waves not yet
            started are dropped.
        """
        if self.workers == 1 or not waves:
            return self._extract_here(waves)
        pool = self._started_pool()
        futures: list[Future] = [pool.submit(_extract_in_worker, wave) for wave in reversed(waves)][::-1]
        try:
            results = self._extract_here(waves, futures)  # this process's share: what the pool has not started
            results.extend(future.result() for future in futures[len(results) :])
        except BrokenProcessPool as exc:
            self.close(wait=False)
            raise SermtlError(
                f"{self.name}: an openSMILE worker process stopped ({exc}); run again, or with --workers 1"
            ) from exc
        except Exception:
            for future in futures:
                future.cancel()
            raise
        except BaseException:  # Ctrl-C, SystemExit: drop the batch; the workers end after the wave they hold
            self.close(wait=False)
            raise
        return results

    def _extract_here(self, waves: Sequence[np.ndarray], futures: Sequence[Future] | None = None) -> list[np.ndarray]:
        """Features of ``waves`` from the first on, in this process; with the pool's
        ``futures`` of the same waves, up to the first wave the pool has started."""
        results: list[np.ndarray] = []
        with interrupts_between_waves() as deliver:
            for i, wave in enumerate(waves):
                if futures is not None and not futures[i].cancel():
                    break
                results.append(self.extract_one(wave))
                deliver()
        return results

    def extract_one(self, wave: np.ndarray) -> np.ndarray:
        """Features of one wave ``(samples,)`` in this process, float32 ``(1, frames, dim)``."""
        return self.to_frames(self.process(wave), len(wave))[None]

    def _started_pool(self) -> ProcessPoolExecutor:
        """The worker pool, started on first use and reused for every later batch."""
        if self._pool is None:
            self._pool = _new_pool(self.workers - 1, type(self), self.config.opensmile_version)
            self._finalizer = weakref.finalize(self, _end_pool, self._pool)
        return self._pool

    def close(self, wait: bool = True) -> None:
        """End the worker pool, if one was started (a later batch starts a new one).

        The waves not started are dropped; a worker ends once the wave it holds (and the
        one queued for it, if any) is done.

        Parameters
        ----------
        wait : bool
            Return only once the worker processes have ended.
        """
        pool, finalizer, self._pool, self._finalizer = self._pool, self._finalizer, None, None
        if finalizer is not None:
            finalizer.detach()
        if pool is not None:
            _end_pool(pool, wait=wait)

    def to_frames(self, table: pandas.DataFrame, num_samples: int) -> np.ndarray:  # noqa: F821
        """What is stored, float32 ``(frames, dim)``, of openSMILE's output ``table`` for a
        wave of ``num_samples``."""
        raise NotImplementedError


@contextlib.contextmanager
def interrupts_between_waves() -> Iterator[Callable[[], None]]:
    """Hold Ctrl-C back while openSMILE computes in this process, and raise it between waves.

    openSMILE hands its output to Python through a ctypes callback; the ``KeyboardInterrupt``
    of a Ctrl-C landing there is printed and dropped by ctypes ("Exception ignored on calling
    ctypes callback function"), so an extraction would go on as if nothing happened. Inside
    this block SIGINT is only noted; ``deliver()`` (call it after each wave) and the block's
    end pass a noted one to the handler that was there before (normally: raise
    ``KeyboardInterrupt``). Outside the main thread, where no handler can be set, nothing changes.

    Yields
    ------
    Callable[[], None]
        ``deliver``: hands a noted SIGINT over now.
    """
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is None:
        yield lambda: None
        return
    noted: list[int] = []

    def note(signum: int, frame: Any) -> None:
        noted.append(signum)

    def deliver() -> None:
        if noted:
            noted.clear()
            signal.signal(signal.SIGINT, previous)
            try:
                signal.raise_signal(signal.SIGINT)
            finally:
                signal.signal(signal.SIGINT, note)

    signal.signal(signal.SIGINT, note)
    try:
        yield deliver
    finally:  # also when the block raised: a Ctrl-C noted meanwhile is not lost
        signal.signal(signal.SIGINT, previous)
        if noted:
            signal.raise_signal(signal.SIGINT)


#: The extractor of a worker process (built once by :func:`_start_worker`).
_WORKER: OpenSmileExtractor | None = None


def _new_pool(workers: int, cls: type[OpenSmileExtractor], opensmile_version: str) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes, each holding an extractor ``cls`` of one worker.

    forkserver (spawn where there is none), never fork: the parent may run threads (torch,
    audio decoding) that a forked child would inherit in an unknown state.
    """
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_start_worker, initargs=(cls, opensmile_version)
    )


def _end_pool(pool: ProcessPoolExecutor, wait: bool = True) -> None:
    """Shut ``pool`` down: cancel the waves not started, the workers end after the ones
    they hold; with ``wait``, once they have ended.

    The workers are not killed: a worker killed while the pool's queue feeds it a wave can
    leave the queue's feeder thread blocked on a full pipe, and the interpreter's exit
    waiting for it forever. Letting them finish costs at most two waves each."""
    pool.shutdown(wait=wait, cancel_futures=True)


def _start_worker(cls: type[OpenSmileExtractor], opensmile_version: str) -> None:
    """Set up a worker process: one-threaded libraries, Ctrl-C left to the parent (which
    stops the pool), an exit of its own when the parent dies without stopping it (killed),
    and its own extractor and ``opensmile.Smile``, built once."""
    global _WORKER
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, daemon=True, name="sermtl-parent").start()
    for variable in THREAD_VARIABLES:
        os.environ[variable] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    _WORKER = cls(opensmile_version=opensmile_version)
    _WORKER.smile  # noqa: B018  (built now, not on the first wave)


def _exit_with_parent() -> None:
    """In a worker process: exit once the process that started the pool is gone (killed,
    so that it could not stop the pool), rather than wait for work forever. (Under
    forkserver the worker's OS parent is the fork server, which itself waits for its
    children: the main process is watched through its sentinel instead.)"""
    from multiprocessing.connection import wait

    parent = multiprocessing.parent_process()
    if parent is not None:
        wait([parent.sentinel])
        os._exit(1)


def _extract_in_worker(wave: np.ndarray) -> np.ndarray:
    """In a worker process: the features ``(1, frames, dim)`` of one wave, computed as in one process."""
    assert _WORKER is not None, "not a worker process"
    return _WORKER.extract_one(wave)


class LowLevelDescriptors(OpenSmileExtractor):
    """Frame-level LLDs on the spectral features' 10 ms grid (module docstring)."""

    feature_level = "LowLevelDescriptors"

    def num_frames(self, num_samples: int) -> int:
        return 1 + num_samples // HOP

    @staticmethod
    def shift(table: pandas.DataFrame) -> int:  # noqa: F821
        """Hops from the grid's frame 0 to the centre of openSMILE's first row."""
        start, end = (table.index.get_level_values(level)[0].total_seconds() for level in (0, 1))
        return int(round((start + end) / 2 * 16000 / HOP))

    def to_frames(self, table, num_samples):
        rows = table.to_numpy(dtype=np.float32)
        frames = self.num_frames(num_samples)
        before = min(self.shift(table), frames - 1)
        after = max(0, frames - before - len(rows))
        return np.pad(rows, ((before, after), (0, 0)), mode="edge")[:frames]


class Functionals(OpenSmileExtractor):
    """Utterance-level functionals, one stored frame per utterance."""

    feature_level = "Functionals"

    def num_frames(self, num_samples: int) -> int:
        return 1

    @property
    def frame_rate(self) -> float:
        return 0.0

    def to_frames(self, table, num_samples):
        return table.to_numpy(dtype=np.float32)[:1]


class EGeMAPS(LowLevelDescriptors):
    """eGeMAPSv02 low-level descriptors: 25 per 10 ms frame."""

    name = "egemaps"
    feature_set = "eGeMAPSv02"


class ComParE(LowLevelDescriptors):
    """ComParE_2016 low-level descriptors: 65 per 10 ms frame."""

    name = "compare"
    feature_set = "ComParE_2016"


class EGeMAPSFunctionals(Functionals):
    """eGeMAPSv02 functionals: 88 per utterance."""

    name = "egemaps-functionals"
    feature_set = "eGeMAPSv02"


class ComParEFunctionals(Functionals):
    """ComParE_2016 functionals: 6373 per utterance."""

    name = "compare-functionals"
    feature_set = "ComParE_2016"
