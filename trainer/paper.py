"""The paper's published numbers (Kumawat & Routray), for reports that put ours beside them,
and the experiment that reproduces each table and figure (:data:`EXPERIMENTS`).

All accuracies in percent. Keys follow sermtl's names: corpora ``iemocap``/``baum1``,
features ``mfcc``/``w2v2``, methods ``nomtl``/``mtl`` (``--aux none``/``--aux expression``).
"""

from __future__ import annotations

from featurestore.registry import Registry

#: ``sermtl experiment NAME``: the function of :mod:`trainer.experiments` that reproduces it.
EXPERIMENTS = Registry(
    "experiment",
    {
        "table1": "trainer.experiments:table1",
        "table2": "trainer.experiments:table2",
        "table3": "trainer.experiments:table3",
        "table4": "trainer.experiments:table4",
        "table5": "trainer.experiments:table5",
        "table6": "trainer.experiments:table6",
        "fig2": "trainer.experiments:fig2",
        "alpha-sweep": "trainer.experiments:alpha_sweep",
    },
)

#: Table I: utterances per emotion in the preliminary split (IEMOCAP sessions 1-4 / 5).
TABLE1 = {
    "train": {"angry": (933, 675, 258), "happy": (1194, 527, 667), "neutral": (1324, 512, 812), "sad": (839, 364, 475)},
    "test": {"angry": (170, 139, 31), "happy": (442, 162, 280), "neutral": (384, 97, 287), "sad": (245, 112, 133)},
}
#: Table II: MFCC accuracy; ``[test part][training set]``.
TABLE2 = {
    "acted": {"combined": 50.57, "acted": 56.07, "spontaneous": 47.70},
    "spontaneous": {"combined": 54.70, "acted": 50.33, "spontaneous": 58.85},
}
#: Table III: ``[feature][method][corpus] = (WA, UWA)``.
TABLE3 = {
    "mfcc": {
        "nomtl": {"iemocap": (54.25, 53.78), "baum1": (50.24, 44.12)},
        "mtl": {"iemocap": (55.43, 55.98), "baum1": (53.08, 46.89)},
    },
    "w2v2": {
        "nomtl": {"iemocap": (67.71, 68.80), "baum1": (50.82, 48.51)},
        "mtl": {"iemocap": (72.79, 72.82), "baum1": (59.02, 53.92)},
    },
}
#: Table IV: IEMOCAP UWA of earlier audio-only 5-fold work, as cited by the paper.
TABLE4 = {
    "Peng et al. [28]": 62.60,
    "Liu et al. [23]": 70.78,
    "Sajjad et al. [29]": 72.25,
    "paper, w/o MTL": 68.80,
    "paper, w. MTL": 72.82,
}
#: Table V: ``[setting] = {"nomtl": (WA, UWA), "mtl": (WA, UWA), "era": ERA}``.
TABLE5 = {
    "iemocap": {"nomtl": (67.71, 68.80), "mtl": (72.79, 72.82), "era": 88.72},
    "baum1": {"nomtl": (50.82, 48.51), "mtl": (59.02, 53.92), "era": 87.50},
    "cross1": {"nomtl": (80.49, 80.74), "mtl": (83.23, 82.80), "era": 98.30},
    "cross2": {"nomtl": (80.15, 80.67), "mtl": (82.33, 81.12), "era": 98.15},
}
#: Table VI: per-class recall (TPR) ``[corpus][feature][method][emotion]``.
TABLE6 = {
    "iemocap": {
        "mfcc": {
            "nomtl": {"angry": 59.41, "happy": 45.57, "neutral": 55.75, "sad": 54.40},
            "mtl": {"angry": 67.07, "happy": 47.26, "neutral": 53.90, "sad": 55.69},
        },
        "w2v2": {
            "nomtl": {"angry": 68.65, "happy": 59.78, "neutral": 75.45, "sad": 71.33},
            "mtl": {"angry": 80.59, "happy": 64.67, "neutral": 72.69, "sad": 73.33},
        },
    },
    "baum1": {
        "mfcc": {
            "nomtl": {"angry": 47.30, "happy": 27.77, "sad": 28.33, "disgust": 61.04, "fear": 35.10, "boredom": 65.19},
            "mtl": {"angry": 53.97, "happy": 25.15, "sad": 36.22, "disgust": 64.35, "fear": 36.28, "boredom": 65.37},
        },
        "w2v2": {
            "nomtl": {"angry": 78.57, "happy": 71.43, "sad": 56.86, "disgust": 29.43, "fear": 33.33, "boredom": 21.43},
            "mtl": {"angry": 92.86, "happy": 74.51, "sad": 56.50, "disgust": 29.41, "fear": 41.67, "boredom": 28.57},
        },
    },
}
#: Fig. 2 gives no numbers; what it shows, for the report.
FIG2_CLAIM = (
    "with MTL, emotion embeddings are more separable by emotion and less separable by "
    "data expression (wav2vec 2.0, evaluation sets of IEMOCAP and BAUM-1)"
)
