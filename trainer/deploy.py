"""A deployable model: trained on every row of a store, with a model card.

``sermtl train --all-data --config RUN/config.json --out MODEL`` trains with the settings of a
finished ``cv`` run on all its store's rows (no validation or test set: it trains for a
fixed number of epochs, by default the median of the epochs the run's folds kept), and
writes ``MODEL/checkpoint.pt`` (for ``sermtl predict --checkpoint MODEL`` and
:class:`trainer.predict.Predictor`), ``MODEL/history.csv`` and ``MODEL/MODEL_CARD.md``:
data, protocol, the cross-validated metrics that estimate how the model does on unseen
speakers, the config, intended use and limits.

With ``--repeats N`` (N > 1) it trains N networks on the same rows, with seeds ``--seed`` …
``--seed`` + N − 1 (initialisation, batches and augmentation drawn anew), and writes
``MODEL/seed_<s>/checkpoint.pt`` and ``MODEL/seed_<s>/history.csv`` for each seed beside
one ``MODEL/MODEL_CARD.md``: a seed ensemble, whose prediction is the mean of the
networks' emotion (and auxiliary) probabilities (:func:`trainer.predict.checkpoint_paths`
finds its members, ``sermtl export`` writes them as one graph).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import statistics
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from featurestore.atomic import write_text
from featurestore.errors import ConfigError
from featurestore.features.fusion import feature_name
from featurestore.options import check_value
from featurestore.store.fusion import store_name, store_paths
from trainer.checkpoint import save_checkpoint
from trainer.config import TrainConfig
from trainer.cv import StoreSession, check_tasks, write_history_csv
from trainer.folds import Fold
from trainer.loop import check_columns, resolved_config, train_fold
from trainer.run_options import ResolvedRun, RunOptions
from trainer.runfiles import read_results, read_run_config


@dataclasses.dataclass(frozen=True)
class CvEstimate:
    """What a model card quotes of the cross-validation run made with the model's settings."""

    run: Path
    results: dict[str, Any]
    protocol: dict[str, Any]

    def median_epochs(self) -> int | None:
        """The median of the epochs the run's folds kept (``best_epoch``, each checked when
        read to lie in the range of ``--epochs``), or ``None`` when no fold recorded one."""
        kept = [f["best_epoch"] for f in self.results["folds"] if f.get("best_epoch") is not None]
        return int(round(statistics.median(kept))) if kept else None


def cv_estimate(cv_run: Path | None) -> CvEstimate | None:
    """The results and protocol of ``cv_run`` (checked files), or ``None`` without a finished run."""
    if cv_run is None or not (cv_run / "results.json").is_file():
        return None
    config = cv_run / "config.json"
    protocol = read_run_config(config)["protocol"] if config.is_file() else {}
    return CvEstimate(cv_run, read_results(cv_run / "results.json"), protocol)


def train_all_data(
    store_path: str | Path,
    out_dir: str | Path,
    config: TrainConfig,
    estimate: CvEstimate | None = None,
    progress: bool = True,
    repeats: int = 1,
) -> list[dict[str, Any]]:
    """Train on every row of the store and write the model and its card (module docstring),
    quoting ``estimate`` (:func:`cv_estimate`); with ``repeats`` N > 1, N networks of seeds
    ``config.seed`` … ``+N−1`` in ``seed_<s>`` folders. Returns the checkpoints, one per seed.

    Every file read (the store; the cv run's files, read by :func:`cv_estimate`) is read
    and checked before training starts. The model folder is built aside (a hidden folder
    beside ``out_dir``) and renamed into place whole, so a failure leaves nothing behind and
    the same command can run again; ``out_dir`` must not exist or be an empty folder."""
    check_value(RunOptions, "repeats", repeats)
    out = Path(out_dir)
    held = next((p for p in (out / "checkpoint.pt", *sorted(out.glob("seed_*/checkpoint.pt"))) if p.exists()), None)
    if held is not None:
        raise ConfigError(f"--out {out} already holds a model ({held.relative_to(out)}); choose another folder")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out} exists and is not an empty folder; choose another folder")
    with StoreSession(store_path) as session:
        store = session.store
        config = resolved_config(config, store.manifest)
        check_columns(store, config)
        everything = Fold(1, [u for u in store.ids()], [], [])
        check_tasks(store.manifest, [everything], config)
        seeds = list(range(config.seed, config.seed + repeats))
        checkpoints = []
        with _built_aside(out) as building:
            bank = session.bank(config.layer, config.device, config.network.input_norm)
            for seed in seeds:
                member = building if repeats == 1 else building / f"seed_{seed}"
                member.mkdir(exist_ok=True)
                outcome = train_fold(
                    store,
                    bank,
                    everything,
                    dataclasses.replace(config, seed=seed),
                    progress=progress,
                    on_epoch=lambda history, member=member: write_history_csv(member / "history.csv", history),
                )
                checkpoints.append({**outcome.checkpoint, "fold": 0, "trained_on": "all rows"})
                save_checkpoint(member / "checkpoint.pt", checkpoints[-1])
            card = model_card(store, config, session.identity, estimate, seeds if repeats > 1 else None)
            write_text(building / "MODEL_CARD.md", card)
    return checkpoints


@contextlib.contextmanager
def _built_aside(out: Path) -> Iterator[Path]:
    """A new hidden folder beside ``out`` to build in, renamed to ``out`` when the block
    succeeds and removed when it fails."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot create it ({os.strerror(exc.errno) if exc.errno else exc})") from None
    try:
        yield building
        try:
            os.rename(building, out)  # onto a missing or empty folder only
        except OSError as exc:
            raise ConfigError(
                f"--out {out}: cannot move the finished model into place "
                f"({os.strerror(exc.errno) if exc.errno else exc}); choose another folder"
            ) from None
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise


def model_card(
    store,
    config: TrainConfig,
    identity: dict[str, Any],
    estimate: CvEstimate | None,
    seeds: list[int] | None = None,
) -> str:
    """The model card (Markdown) of a model trained on all of ``store`` (with ``seeds``, of
    the ensemble of one network per seed)."""
    manifest = store.manifest
    feature = store.attrs.get("feature") or {}
    counts = Counter(manifest[u][config.label] for u in store.ids())
    speakers = {manifest[u]["speaker"] for u in store.ids()} - {None, ""}
    corpora = sorted({str(manifest[u]["corpus"]) for u in store.ids()} - {"None", ""})
    defaults = TrainConfig().flat()
    changed = {k: v for k, v in config.flat().items() if v != defaults.get(k) and k not in ("device",)}
    lines = [
        "# Model card",
        "",
        f"ECAPA-TDNN speech emotion classifier (sermtl) on `{feature_name(feature)}` features"
        + (f" of `{feature['model']}`" if feature.get("model") else "")
        + (
            ", trained on every utterance of one store."
            if len(store_paths(identity["store"])) == 1
            else ", trained on every utterance of the fused stores."
        ),
        *(
            [
                "",
                f"An ensemble of {len(seeds)} seeds ({', '.join(map(str, seeds))}): {len(seeds)} networks trained "
                "alike on the same rows, each with its own seed (initialisation, batches, augmentation), in "
                "`seed_<s>/checkpoint.pt`; its prediction is the mean of their emotion (and auxiliary) "
                "probabilities.",
            ]
            if seeds
            else []
        ),
        "",
        "## Data",
        "",
        f"- Store: `{'`, `'.join(map(str, store_paths(identity['store'])))}` (fingerprint `{identity['store_fingerprint']}`, digest `{identity['store_digest']}`).",
        f"- Corpora: {', '.join(corpora) or 'unnamed'}; {len(store)} utterances, {len(speakers)} speakers.",
        f"- Classes (`{config.label}`): " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + ".",
        f"- Auxiliary task: `{config.aux}`.",
        "",
        "## Training",
        "",
        f"- All rows, no validation or test set; {config.epochs} epochs"
        + (f" (the median of the epochs kept by the folds of `{estimate.run}`)." if estimate else ".")
        + (
            f" Without validation scores there are no best epochs to average (`average_best={config.average_best}`):"
            " the model keeps its last epoch's weights."
            if config.average_best > 1
            else ""
        ),
        "- Options that differ from sermtl's defaults: "
        + (", ".join(f"`{k}={v}`" for k, v in sorted(changed.items())) or "none")
        + ".",
        "",
        "## Expected performance",
        "",
    ]
    if estimate is not None:
        r, protocol = estimate.results, estimate.protocol
        std = r.get("std") or {}
        recall = ", ".join(f"{k} {v:.1f}" for k, v in (r.get("per_class_recall") or {}).items() if v is not None)
        spread = {key: f" ± {std[key]:.2f}" if std.get(key) is not None else "" for key in ("wa", "uwa")}
        lines += [
            f"Cross-validated with the same settings (`{estimate.run}`, protocol `{protocol.get('name')}`"
            + (f" by `{protocol['by']}`" if protocol.get("by") else "")
            + f", {len(r['folds'])} folds): "
            f"WA {r['wa']:.2f}{spread['wa']}, UWA {r['uwa']:.2f}{spread['uwa']} "
            "(%, mean ± std over folds)" + (f"; recall per class: {recall}." if recall else "."),
            "This model is trained on all of those folds' data; expect figures like these on speakers, "
            "recording conditions and languages like the training data's, and lower elsewhere.",
            *(
                ["These are one network's figures; `cv --repeats N` scores the ensemble of N seeds (`ensemble.json`)."]
                if seeds
                else []
            ),
            "",
        ]
    else:
        lines += ["No cross-validation run was named (`--config RUN/config.json`): no estimate.", ""]
    lines += [
        "## Intended use and limits",
        "",
        "- Research on speech emotion recognition, and as a baseline; the labels are the corpus's categories, "
        "acted or elicited as the corpus was, not a measure of anyone's inner state.",
        "- Not for decisions about people (hiring, health, policing, surveillance).",
        "- Emotion corpora are small and narrow (few speakers, one language, one setting); accuracy drops across "
        "corpora, languages, channels and between acted and spontaneous speech.",
    ]
    if config.network.speaker_normalised:
        lines.append(
            "- Trained with speaker normalisation: give `predict` several recordings of one speaker per call "
            "(their statistics stand for the speaker's)."
        )
    lines += ["", "## Config", "", "```json", json.dumps(config.to_dict(), indent=2, sort_keys=True), "```", ""]
    return "\n".join(lines)


def deploy_model(
    run: ResolvedRun,
    out: str | Path | None,
    cv_run: Path | None,
    epochs_given: bool,
    progress: bool = True,
    repeats: int = 1,
) -> tuple[Path, TrainConfig]:
    """``sermtl train --all-data [--repeats N]``: train ``run`` on every row into ``out``
    (default ``models/<store>``), N networks of seeds ``--seed`` … ``+N−1`` with ``repeats``
    N > 1. With ``cv_run`` (the folder of a ``--config RUN/config.json``) the card quotes
    that run's results and, unless ``epochs_given``, training lasts the median of the
    epochs its folds kept. Returns the model folder and the config trained with."""
    estimate = cv_estimate(cv_run)
    config = run.config
    if cv_run is not None and not epochs_given:
        epochs = estimate.median_epochs() if estimate is not None else None
        if epochs is None:
            raise ConfigError(f"--all-data: {cv_run} has no finished folds to take the epoch count from; give --epochs")
        config = dataclasses.replace(config, epochs=epochs)
    model_dir = Path(out) if out else Path("models") / store_name(run.store)
    train_all_data(run.store, model_dir, config, estimate, progress=progress, repeats=repeats)
    return model_dir, config


def describe_model(model_dir: Path, config: TrainConfig, repeats: int = 1) -> str:
    """The line ``sermtl train --all-data`` prints: the epochs and the files written."""
    if repeats == 1:
        files = f"{model_dir / 'checkpoint.pt'}, {model_dir / 'MODEL_CARD.md'}"
        return f"{model_dir}: trained on every row for {config.epochs} epochs; {files}"
    last = config.seed + repeats - 1
    return (
        f"{model_dir}: {repeats} networks (seeds {config.seed}…{last}) trained on every row for {config.epochs} "
        f"epochs, their probabilities averaged; {model_dir / 'seed_<s>' / 'checkpoint.pt'}, "
        f"{model_dir / 'MODEL_CARD.md'}"
    )
