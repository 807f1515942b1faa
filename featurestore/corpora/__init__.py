"""Corpus recipes: turn a corpus folder into a :class:`~featurestore.manifest.Manifest`.

Each recipe is a plain function ``prepare_<corpus>(root, **options)`` in its own module,
listed in :data:`CORPORA` and imported only when used. Helpers they share live in
:mod:`featurestore.corpora.base`, which also describes how problems are reported
(``manifest.report`` and :class:`~featurestore.corpora.base.CorpusWarning`).

Examples
--------
>>> available_corpora()
['baum1', 'csv', 'emobox', 'emodb', 'hf', 'iemocap', 'lhotse', 'ravdess', 'urdu']
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

from featurestore.errors import CorpusError
from featurestore.manifest import Manifest
from featurestore.registry import Registry

#: Corpus name -> ``"module:function"`` of its recipe (alphabetical, as the choices are listed).
CORPORA = Registry(
    "--corpus",
    {
        "baum1": "featurestore.corpora.baum1:prepare_baum1",
        "csv": "featurestore.corpora.csv_manifest:prepare_csv",
        "emobox": "featurestore.corpora.emobox:prepare_emobox",
        "emodb": "featurestore.corpora.emodb:prepare_emodb",
        "hf": "featurestore.corpora.hf:prepare_hf",
        "iemocap": "featurestore.corpora.iemocap:prepare_iemocap",
        "lhotse": "featurestore.corpora.lhotse_manifests:prepare_lhotse",
        "ravdess": "featurestore.corpora.ravdess:prepare_ravdess",
        "urdu": "featurestore.corpora.urdu:prepare_urdu",
    },
)
#: Text values accepted for yes/no options.
_FLAGS: dict[str, bool | None] = {
    "true": True,
    "yes": True,
    "1": True,
    "false": False,
    "no": False,
    "0": False,
    "auto": None,
}


def available_corpora() -> list[str]:
    """Names accepted by :func:`prepare`, sorted."""
    return sorted(CORPORA.names())


def get_recipe(name: str) -> Callable[..., Manifest]:
    """The recipe function of corpus ``name``.

    Raises
    ------
    ConfigError
        ``name`` is not in :data:`CORPORA` (the message lists the choices).
    """
    return CORPORA.load(name)


def prepare(name: str, root: str | os.PathLike, **options: Any) -> Manifest:
    """Build the manifest of corpus ``name`` found at ``root``.

    Parameters
    ----------
    name : str
        One of :func:`available_corpora`.
    root : str or os.PathLike
        The corpus folder; for ``csv``, the CSV file.
    **options
        Recipe options, e.g. ``classes="4class"`` or ``on_duplicate="skip"``; yes/no
        options may be given as text (``"true"``, ``"false"``, ``"auto"``).

    Returns
    -------
    Manifest
        The manifest; its ``report`` attribute lists what was left out and why.

    Raises
    ------
    SermtlError
        Unknown corpus or option, a bad root, or a recipe error.
    """
    recipe = get_recipe(name)
    parameters = dict(list(inspect.signature(recipe).parameters.items())[1:])
    for option, value in options.items():
        if option not in parameters:
            raise CorpusError(f"corpus {name!r} has no option {option!r} (options: {', '.join(parameters) or 'none'})")
        if isinstance(value, str) and "bool" in str(parameters[option].annotation):
            options[option] = _parse_flag(name, option, value)
    return recipe(root, **options)


def _parse_flag(corpus: str, option: str, value: str) -> bool | None:
    """A yes/no option given as text (``--option expect_full_release=true``)."""
    try:
        return _FLAGS[value.strip().lower()]
    except KeyError:
        raise CorpusError(
            f"option {option!r} of corpus {corpus!r} must be true, false or auto, got {value!r}"
        ) from None
