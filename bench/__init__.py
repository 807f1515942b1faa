"""Benchmarks of the feature store and the trainer (not installed with the package).

``python bench/run.py --quick`` (CPU figures), ``python bench/gpu.py`` (GPU figures),
``python bench/store_layouts.py`` (store layout comparison); see ``docs/performance.md``.
"""
