"""The options of ``predict`` and ``export`` (:class:`ModelSource`, :class:`ExportOptions`),
declared once; torch-free, so the command line lists them without importing torch."""

from __future__ import annotations

import dataclasses

from featurestore.features.base import device_problem
from featurestore.options import check_fields, option

#: What ``sermtl export`` writes: a TorchScript module or an ONNX graph.
EXPORT_FORMATS = ("torchscript", "onnx")


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """A trained model and where it runs (declared options)."""

    checkpoint: str | None = option(
        None,
        "checkpoint.pt of a trained fold, a model folder of train --all-data (with --repeats N: its seeds "
        "vote, mean probabilities), or (predict) a cv run directory, whose folds vote as an ensemble.",
        path="any",
        required=True,
    )
    device: str = option("cpu", "cpu, cuda, cuda:N, mps or auto.", check=device_problem)

    def __post_init__(self) -> None:
        check_fields(self)


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """What ``sermtl export`` writes (declared options)."""

    format: str = option("onnx", "Exported format.", choices=EXPORT_FORMATS)
    out: str | None = option(None, "The exported model (FILE.json and FILE.md beside it).", path="file", required=True)

    def __post_init__(self) -> None:
        check_fields(self)
