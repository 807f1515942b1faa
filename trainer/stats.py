"""Paired statistics for comparing two settings on the same (seed, fold) pairs.

On corpora of a few hundred utterances the seed alone moves UWA by many points, so two
settings are compared on the same folds of the same seeds, pair by pair: the mean paired
difference with a 95 % Student-t confidence interval, and a Wilcoxon signed-rank p-value
(two-sided; SciPy's exact test for small samples without ties, its normal approximation
otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from featurestore.errors import SermtlError


def _scipy_stats():
    try:
        from scipy import stats
    except ImportError:
        raise SermtlError("paired statistics need scipy: pip install 'sermtl[train]'") from None
    return stats


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """``n``, ``mean``, sample ``std`` and ``ci``, the Student-t interval of the mean at
    ``confidence`` (``std`` and ``ci`` are ``None`` below 2 values)."""
    stats = _scipy_stats()
    data = np.asarray(values, dtype=np.float64)
    out: dict[str, Any] = {"n": len(data), "mean": float(data.mean()) if len(data) else None, "std": None, "ci": None}
    if len(data) >= 2:
        std = float(data.std(ddof=1))
        half = float(stats.t.ppf(0.5 + confidence / 2, len(data) - 1)) * std / math.sqrt(len(data))
        out.update(std=std, ci=[out["mean"] - half, out["mean"] + half])
    return out


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Statistics of ``a - b`` over pairs: :func:`mean_interval` of the differences, and
    ``wilcoxon_p`` (``None`` below 2 pairs; 1.0 when every difference is 0).

    Examples
    --------
    >>> stats = paired_difference([3, 4, 5, 6, 7], [2, 2, 2, 2, 2])
    >>> stats["mean"], [round(x, 4) for x in stats["ci"]], stats["wilcoxon_p"]
    (3.0, [1.0368, 4.9632], 0.0625)
    """
    stats = _scipy_stats()
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} and {len(b)}")
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    out = {**mean_interval(diff, confidence), "wilcoxon_p": None}
    if len(diff) >= 2:
        out["wilcoxon_p"] = 1.0 if not diff.any() else float(stats.wilcoxon(diff).pvalue)
    return out


def paired_over_keys(
    mine: Mapping[Hashable, float], reference: Mapping[Hashable, float], confidence: float = 0.95
) -> dict[str, Any]:
    """:func:`paired_difference` of ``mine - reference`` over the keys both hold (e.g.
    (seed, fold) pairs), with those keys as ``pairs``."""
    pairs = sorted(set(mine) & set(reference))
    return {
        **paired_difference([mine[p] for p in pairs], [reference[p] for p in pairs], confidence),
        "pairs": [list(p) if isinstance(p, tuple) else p for p in pairs],
    }


def paired_cells(paired: dict[str, Any] | None) -> list[Any]:
    """Table cells of a paired difference: mean, interval, Wilcoxon p and pairs ("baseline"
    and blanks for ``None``, "–" where a statistic needs more pairs)."""
    if paired is None:
        return ["baseline", "", "", ""]
    return [
        f"{paired['mean']:+.2f}" if paired["mean"] is not None else "–",
        f"[{paired['ci'][0]:+.2f}, {paired['ci'][1]:+.2f}]" if paired["ci"] else "–",
        f"{paired['wilcoxon_p']:.3f}" if paired["wilcoxon_p"] is not None else "–",
        paired["n"],
    ]
