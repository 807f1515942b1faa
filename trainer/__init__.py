"""The trainer: ECAPA-TDNN multi-task training from a feature store (models, tasks, losses, data loading, cross-validation, metrics and reports)."""
