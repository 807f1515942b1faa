"""Every registry of names a user types, by title, for ``sermtl list`` and for tests that
walk them all. Torch-free."""

from __future__ import annotations

from featurestore.corpora import CORPORA
from featurestore.features import FEATURES
from featurestore.registry import Registry
from featurestore.store.base import BACKENDS
from trainer.baseline import FUNCTIONALS
from trainer.config import PRESETS
from trainer.folds import PROTOCOLS
from trainer.paper import EXPERIMENTS

REGISTRIES: dict[str, Registry] = {
    "corpora": CORPORA,
    "features": FEATURES,
    "store formats": BACKENDS,
    "protocols": PROTOCOLS,
    "presets": PRESETS,
    "experiments": EXPERIMENTS,
    "functionals": FUNCTIONALS,
}
