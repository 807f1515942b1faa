"""The caps on sizes a user or a file can set, declared once for the options that take
them (:mod:`trainer.config`), the files read back (:mod:`trainer.runfiles`) and the
checkpoints (:mod:`trainer.checkpoint`). Torch-free and importing nothing of sermtl's."""

#: The most epochs a run may train (``--epochs``, and epochs read back from a run's files).
MAX_EPOCHS = 10_000
#: The most classes a label, an auxiliary task or a checkpoint may have.
MAX_CLASSES = 1000
#: The most folds a protocol or a fold file may have.
MAX_FOLDS = 1000
#: The most seeds of ``--repeats`` and of a sweep.
MAX_SEEDS = 1000
