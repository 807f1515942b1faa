"""Models: ECAPA-TDNN and its blocks (:mod:`.ecapa`), classifier heads (:mod:`.heads`)."""

from trainer.models.ecapa import (
    ECAPATDNN,
    AttentiveStatisticsPooling,
    Res2NetBlock,
    SEBlock,
    SERes2NetBlock,
    TDNNBlock,
    frame_mask,
)
from trainer.models.heads import AAMSoftmax, AuxHead, LayerWeightedSum

__all__ = [
    "ECAPATDNN",
    "AAMSoftmax",
    "AttentiveStatisticsPooling",
    "AuxHead",
    "LayerWeightedSum",
    "Res2NetBlock",
    "SEBlock",
    "SERes2NetBlock",
    "TDNNBlock",
    "frame_mask",
]
