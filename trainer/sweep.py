"""Sweeps: one cross-validation run per setting of an option grid and per seed, all on the
same folds, compared with paired statistics.

Sweep directory::

    DIR/grid.json                   the sweep's identity: store, protocol, base config,
                                    settings, seeds and baseline (a resumed sweep must match)
    DIR/<setting>/seed_<s>/         a normal run directory per setting and seed (resumable,
                                    readable by ``sermtl report``)
    DIR/sweep.json, sweep.md        per setting: WA, UWA and pooled UWA, mean ± std over seeds;
                                    against the baseline setting, the mean paired difference in
                                    UWA over (seed, fold) pairs with its 95 % interval and a
                                    Wilcoxon signed-rank p-value
    DIR/sweep.png                   UWA per setting with its 95 % interval over seeds

For a given seed every setting trains on the same folds (they are drawn from the protocol
and the seed alone), so fold ``k`` of seed ``s`` pairs the settings. The store is opened and
its features loaded once per process (:class:`trainer.cv.StoreSession`), and each training
set's normalisation statistics computed once. Every setting, seed and fold is checked before
the first file is written.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from featurestore.atomic import read_json, write_json, write_text
from featurestore.errors import ConfigError, quote
from featurestore.schema import Anything, ListOf, MapOf, check
from featurestore.store.fusion import StoreSpec, store_name
from featurestore.textfile import read_structured_file
from trainer.config import TrainConfig, parse_value
from trainer.cv import StoreSession, plan_run, run_cv
from trainer.metrics import summarise_repeats
from trainer.plots import plot_sweep
from trainer.protocols import Protocol
from trainer.run_options import ResolvedRun, SweepOptions
from trainer.stats import mean_interval, paired_cells, paired_over_keys
from trainer.tables import markdown_table

#: Options a grid may not vary: seeds come from ``--repeats``, the device is not a setting.
NOT_IN_GRID = ("seed", "device")
#: The most settings a sweep may have (refused before anything is planned).
MAX_SETTINGS = 1000
#: A grid file: a list of settings, each a mapping of options (checked by :class:`TrainConfig`).
GRID_FILE = ListOf(MapOf(Anything(), max_items=64), min_items=1, max_items=MAX_SETTINGS)


def parse_grid(grids: Sequence[str]) -> list[dict[str, Any]]:
    """Settings of ``--grid KEY=V1,V2`` flags: the Cartesian product, in the order given;
    more than :data:`MAX_SETTINGS` settings are refused before the product is made.

    >>> parse_grid(["alpha0=0.05,0.1", "aux=none,expression"])[1]
    {'alpha0': 0.05, 'aux': 'expression'}
    """
    axes: dict[str, list[Any]] = {}
    for grid in grids:
        key, sep, values = grid.partition("=")
        key = key.strip().replace("-", "_")
        texts = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key or not texts:
            raise ConfigError(f"--grid expects KEY=V1,V2,…, got {quote(grid)}")
        if key in axes:
            raise ConfigError(f"--grid {key} is given twice")
        _check_key(key)
        axes[key] = [parse_value(key, text) for text in texts]
    if not axes:
        raise ConfigError("the grid is empty: give --grid KEY=V1,V2 or --grid-file FILE")
    size = math.prod(len(values) for values in axes.values())
    if size > MAX_SETTINGS:
        raise ConfigError(f"--grid: {size} settings, more than the {MAX_SETTINGS} a sweep may have")
    return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]


def read_grid_file(path: str | Path) -> list[dict[str, Any]]:
    """Settings from a YAML or JSON file holding a list of mappings (a grid that is not a
    product), e.g. ``[{channels: 64}, {channels: 128, batchnorm: precise}]``; at most
    :data:`MAX_SETTINGS`, none of them setting an option of :data:`NOT_IN_GRID`."""
    name = f"--grid-file {path}"
    data = check(read_structured_file(path, name), GRID_FILE, name, ConfigError)
    if not all(data):
        raise ConfigError(f"{name}: setting {[bool(item) for item in data].index(False) + 1} is empty")
    for item in data:
        for key in item:
            _check_key(key, name)
    return [
        {key: parse_value(key, value) if isinstance(value, str) else value for key, value in item.items()}
        for item in data
    ]


def _check_key(key: str, source: str = "--grid") -> None:
    if key in NOT_IN_GRID:
        raise ConfigError(
            f"{source}: {key} is not a setting to sweep ({'use --repeats' if key == 'seed' else 'give --device'})"
        )


def setting_name(setting: dict[str, Any]) -> str:
    """``alpha0=0.1,aux=none``."""
    return ",".join(f"{key}={value}" for key, value in setting.items())


def setting_dir(setting: dict[str, Any]) -> str:
    """A folder name for ``setting`` (``alpha0=0.1__aux=none``)."""
    return "__".join(re.sub(r"[^A-Za-z0-9._=+-]", "_", f"{key}={value}") for key, value in setting.items())


def find_baseline(settings: list[dict[str, Any]], spec: str | None) -> int:
    """The index of the baseline setting: the first, or the one setting that ``spec``
    (``KEY=VALUE,…``, a subset of its keys) describes."""
    if not spec:
        return 0
    wanted = {}
    for pair in spec.split(","):
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--baseline expects KEY=VALUE,…, got {spec!r}")
        wanted[key.strip().replace("-", "_")] = parse_value(key.strip().replace("-", "_"), value.strip())
    matches = [i for i, s in enumerate(settings) if all(k in s and s[k] == v for k, v in wanted.items())]
    if len(matches) != 1:
        found = "no setting" if not matches else f"{len(matches)} settings"
        raise ConfigError(
            f"--baseline {spec}: {found} of the grid match; settings: " + "; ".join(setting_name(s) for s in settings)
        )
    return matches[0]


@dataclasses.dataclass
class Sweep:
    """A planned sweep: where, on what, and which settings and seeds."""

    store: StoreSpec
    out: Path
    base: TrainConfig
    protocol: Protocol | None
    settings: list[dict[str, Any]]
    seeds: list[int]
    baseline: int = 0

    def config(self, setting: dict[str, Any], seed: int) -> TrainConfig:
        """The training config of ``setting`` at ``seed``."""
        return TrainConfig.from_dict({**self.base.flat(), **setting, "seed": seed}, f"setting {setting_name(setting)}")

    def run_dir(self, setting: dict[str, Any], seed: int) -> Path:
        return self.out / setting_dir(setting) / f"seed_{seed}"

    def jobs(self) -> list[tuple[dict[str, Any], int]]:
        """Every (setting, seed), settings first."""
        return [(setting, seed) for setting in self.settings for seed in self.seeds]

    @classmethod
    def from_options(
        cls, run: ResolvedRun, grid: SweepOptions, out: str | Path | None = None, repeats: int = 1
    ) -> Sweep:
        """The sweep of ``grid`` over ``run`` (its config the base of every setting), seeds
        ``config.seed`` … ``+repeats−1``, into ``out`` (default ``sweeps/<store>``)."""
        settings = read_grid_file(grid.grid_file) if grid.grid_file else parse_grid(grid.grids)
        return cls(
            run.store,
            Path(out) if out else Path("sweeps") / store_name(run.store),
            run.config,
            run.protocol,
            settings,
            list(range(run.config.seed, run.config.seed + repeats)),
            find_baseline(settings, grid.baseline),
        )


def plan_sweep(session: StoreSession, sweep: Sweep) -> dict[str, Any]:
    """Check every setting, seed and fold (writing nothing) and the sweep directory against
    this sweep; returns the identity to record in ``grid.json``."""
    if len({setting_dir(s) for s in sweep.settings}) != len(sweep.settings):
        raise ConfigError("the grid lists a setting twice")
    if sweep.out.exists() and not sweep.out.is_dir():
        raise ConfigError(f"--out {sweep.out} is a file, not a sweep directory")
    plans = [
        plan_run(session, sweep.run_dir(setting, seed), sweep.config(setting, seed), sweep.protocol)
        for setting, seed in sweep.jobs()
    ]
    identity = {
        **session.identity,
        "protocol": plans[0].identity["protocol"],
        "base": sweep.base.flat(),
        "settings": sweep.settings,
        "seeds": sweep.seeds,
        "baseline": sweep.baseline,
    }
    grid_path = sweep.out / "grid.json"
    if grid_path.exists():
        saved = read_json(grid_path)
        changed = [key for key in identity if saved.get(key) != identity[key]]
        if changed:
            raise ConfigError(
                f"sweep directory {sweep.out} was made with another {', '.join(changed)}; use another --out"
            )
    return identity


def run_sweep(sweep: Sweep, progress: bool = True) -> dict[str, Any]:
    """Plan, then train every (setting, seed) into its run directory (finished folds are
    kept: an interrupted sweep resumes), and write ``sweep.json``, ``sweep.md`` and
    ``sweep.png``; returns the content of ``sweep.json``."""
    with StoreSession(sweep.store) as session:
        identity = plan_sweep(session, sweep)
        sweep.out.mkdir(parents=True, exist_ok=True)
        write_json(sweep.out / "grid.json", identity)
        results = {
            (setting_name(setting), seed): run_cv(
                sweep.store,
                sweep.run_dir(setting, seed),
                sweep.config(setting, seed),
                sweep.protocol,
                progress=progress,
                session=session,
            )
            for setting, seed in sweep.jobs()
        }
    return write_summary(sweep, results)


def write_summary(sweep: Sweep, results: dict[tuple[str, int], dict[str, Any]]) -> dict[str, Any]:
    """``sweep.json``, ``sweep.md`` and ``sweep.png`` from every run's results."""
    summary = summarise_sweep(sweep, results)
    write_json(sweep.out / "sweep.json", summary)
    plot_sweep(summary, sweep.out / "sweep.png")
    write_text(sweep.out / "sweep.md", sweep_table(summary) + "\n\n![UWA per setting](sweep.png)\n")
    return summary


def summarise_sweep(sweep: Sweep, results: dict[tuple[str, int], dict[str, Any]]) -> dict[str, Any]:
    """Per setting: mean ± std over seeds (:func:`~trainer.metrics.summarise_repeats`), the
    95 % interval of the mean UWA over seeds, and against the baseline the paired
    difference in UWA over (seed, fold) pairs (:func:`~trainer.stats.paired_over_keys`)."""

    def fold_uwa(name: str) -> dict[tuple[int, int], float]:
        return {(seed, fold["fold"]): fold["uwa"] for seed in sweep.seeds for fold in results[(name, seed)]["folds"]}

    baseline = setting_name(sweep.settings[sweep.baseline])
    reference = fold_uwa(baseline)
    rows = []
    for setting in sweep.settings:
        name = setting_name(setting)
        per_seed = {seed: results[(name, seed)] for seed in sweep.seeds}
        rows.append(
            {
                "setting": setting,
                "name": name,
                "dir": setting_dir(setting),
                **summarise_repeats(per_seed),
                "uwa_interval": mean_interval([r["uwa"] for r in per_seed.values()]),
                "paired_uwa": None if name == baseline else paired_over_keys(fold_uwa(name), reference),
            }
        )
    return {"baseline": baseline, "seeds": sweep.seeds, "settings": rows}


def sweep_table(summary: dict[str, Any]) -> str:
    """The sweep as a Markdown table (percent)."""

    def spread(stat: dict[str, float]) -> str:
        return f"{stat['mean']:.2f} ± {stat['std']:.2f}"

    rows = []
    for row in summary["settings"]:
        rows.append(
            [
                row["name"],
                spread(row["wa"]),
                spread(row["uwa"]),
                spread(row["pooled_uwa"]),
                *paired_cells(row["paired_uwa"]),
            ]
        )
    header = ["setting", "WA", "UWA", "pooled UWA", "Δ UWA vs baseline", "95 % CI", "Wilcoxon p", "pairs"]
    seeds = ", ".join(map(str, summary["seeds"]))
    return (
        f"Mean ± std over seeds {seeds} (%). Δ UWA: mean paired difference against `{summary['baseline']}` "
        f"over (seed, fold) pairs, with its 95 % Student-t interval and the Wilcoxon signed-rank p-value.\n\n"
        + markdown_table(header, rows)
    )
