"""The paper's tables and figure, each one command: ``sermtl experiment NAME``.

An experiment asks a :class:`Workspace` for stores (extracting only what a store still
lacks, never twice: extraction resumes) and for cross-validation runs (each a run
directory under ``OUT/runs/``, named by corpus, feature, protocol, auxiliary task and a
hash of the training config, so experiments share runs: Tables III, IV, V, VI and Fig. 2
read the same eight runs, and an interrupted experiment restarts from its finished folds).
Each experiment writes ``OUT/<name>/results.json``, ``table.md`` (our numbers beside the
paper's, every number taken from ``results.json``) and its plots.

Corpora default to the paper's (``iemocap`` with leave-one-session-out, ``baum1`` with
80/10/10 5-fold); any prepared corpus or store can take their place (``--corpus``,
``--store NAME:FEATURE=PATH``), with the protocol chosen from its columns.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from featurestore.atomic import write_json, write_text
from featurestore.corpora.source import cache_dir
from featurestore.errors import ConfigError
from featurestore.extract_options import ExtractOptions
from featurestore.store.reader import stored_manifest
from trainer import paper
from trainer.config import TrainConfig
from trainer.cv import Protocol, default_protocol, run_cv
from trainer.paper import EXPERIMENTS
from trainer.plots import plot_bars
from trainer.run_options import ExperimentOptions
from trainer.sweep import Sweep, run_sweep
from trainer.tables import markdown_table

FEATURES = ("mfcc", "w2v2")
METHODS = {"nomtl": "none", "mtl": "expression"}
METHOD_NAMES = {"nomtl": "w/o MTL", "mtl": "w. MTL"}
CORPUS_PROTOCOLS = {"iemocap": Protocol("loso", by="session"), "baum1": Protocol("kfold", by=None, folds=5)}


@dataclasses.dataclass
class Workspace:
    """Where experiments find corpora and stores and put runs.

    ``roots``: corpus name → corpus folder (or CSV for ``csv``-style corpora given as
    ``name`` → path with ``recipes[name] = "csv"``). ``stores``: ``(corpus, feature)`` →
    an existing store, used as is. Otherwise stores live in ``cache/<corpus>_<feature>.zarr``
    and are extracted (or completed) from the root.
    """

    out: Path
    cache: Path = Path("cache")
    roots: dict[str, str] = dataclasses.field(default_factory=dict)
    recipes: dict[str, str] = dataclasses.field(default_factory=dict)
    stores: dict[tuple[str, str], Path] = dataclasses.field(default_factory=dict)
    model: str = ExtractOptions.model
    layers: str = ExtractOptions.layers
    device: str = "auto"
    train: dict[str, Any] = dataclasses.field(default_factory=dict)
    progress: bool = True
    echo: Callable[[str], None] = print

    @classmethod
    def from_options(
        cls,
        options: ExperimentOptions,
        train: dict[str, Any],
        *,
        model: str = ExtractOptions.model,
        layers: str = ExtractOptions.layers,
        echo: Callable[[str], None] = print,
    ) -> Workspace:
        """The workspace of ``sermtl experiment``'s options: ``train`` holds training options
        (``device`` among them), checked here, before any store is extracted."""
        from featurestore.corpora import CORPORA

        TrainConfig.from_dict(train)
        roots = options.root_map()
        recipes = {c: "csv" for c, r in roots.items() if str(r).lower().endswith(".csv")}
        unknown = [c for c in roots if c not in CORPORA and c not in recipes]
        if unknown:
            raise ConfigError(
                f"--root {unknown[0]}=…: not a corpus recipe ({', '.join(sorted(CORPORA))}) nor a .csv manifest"
            )
        return cls(
            out=Path(options.out),
            cache=cache_dir(),
            roots=roots,
            recipes=recipes,
            stores=options.store_map(),
            model=model,
            layers=layers,
            device=train.get("device", "auto"),
            echo=echo,
            train={k: v for k, v in train.items() if k != "device"},
        )

    def store(self, corpus: str, feature: str) -> Path:
        """A complete store of ``feature`` for ``corpus``; extracts what is missing."""
        given = self.stores.get((corpus, feature))
        if given is not None:
            return Path(given)
        path = self.cache / f"{corpus}_{feature}.zarr"
        root = self.roots.get(corpus)
        if root is None:
            if path.exists():
                return path
            raise ConfigError(
                f"no {feature} store for {corpus}: give --root {corpus}=DIR or --store {corpus}:{feature}=PATH"
            )
        from featurestore.features import accepted_options, build_extractor
        from featurestore.pipeline import extract_to_store

        manifest = self._prepare(corpus, root)
        extractor = build_extractor(
            feature, **accepted_options(feature, {"device": self.device, "model": self.model, "layers": self.layers})
        )
        report = extract_to_store(
            manifest,
            extractor,
            path,
            dtype=extractor.default_dtype,
            batch_seconds=extractor.default_batch_seconds,
            progress=self.progress,
        )
        if report.stored:
            self.echo(f"extracted {report.stored} utterances into {path}")
        return path

    def _prepare(self, corpus: str, root: str):
        from featurestore.corpora import prepare

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return prepare(self.recipes.get(corpus, corpus), root)

    def manifest(self, corpus: str, feature: str):
        """The corpus's manifest: from its store when there is one, else prepared from its
        root (no features are extracted just to count utterances)."""
        path = self.stores.get((corpus, feature), self.cache / f"{corpus}_{feature}.zarr")
        if Path(path).exists() or corpus not in self.roots:
            return stored_manifest(self.store(corpus, feature))
        return self._prepare(corpus, self.roots[corpus])

    def available(self, corpus: str, feature: str) -> bool:
        """Whether a store for ``(corpus, feature)`` exists or can be made."""
        return (
            (corpus, feature) in self.stores
            or corpus in self.roots
            or (self.cache / f"{corpus}_{feature}.zarr").exists()
        )

    def config(self, **overrides: Any) -> TrainConfig:
        # the paper's method normalises by the training set's statistics (global), not auto
        return TrainConfig.from_dict({"device": self.device, "input_norm": "global", **self.train, **overrides})

    def run(self, store: Path, label: str, protocol: Protocol | None = None, **overrides: Any) -> dict[str, Any]:
        """Results of a cross-validation run, reusing its directory when it exists."""
        config = self.config(**overrides)
        if protocol is None:
            protocol = default_protocol(stored_manifest(store))
        identity = json.dumps([str(Path(store).resolve()), dataclasses.asdict(protocol), config.flat()], sort_keys=True)
        name = f"{label}-{protocol.name}-{'nomtl' if config.aux == 'none' else config.aux}-{hashlib.sha256(identity.encode()).hexdigest()[:8]}"
        self.echo(f"run {name}")
        return run_cv(store, self.out / "runs" / name, config, protocol, progress=self.progress) | {
            "run_dir": str(self.out / "runs" / name)
        }

    def corpus_run(self, corpus: str, feature: str, method: str, **overrides: Any) -> dict[str, Any]:
        """The Table III run of ``corpus`` × ``feature`` × ``method`` (``nomtl``/``mtl``)."""
        return self.run(
            self.store(corpus, feature),
            f"{corpus}-{feature}",
            CORPUS_PROTOCOLS.get(corpus),
            aux=METHODS[method],
            **overrides,
        )


# -- output helpers -------------------------------------------------------------------------
def _save(ws: Workspace, name: str, results: dict[str, Any], table: str, note: str = "") -> Path:
    folder = ws.out / name
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "results.json", results)
    text = f"# {name}\n\n{table}\n" + (f"\n{note}\n" if note else "")
    pngs = sorted(p.name for p in folder.glob("*.png"))
    text += "".join(f"\n![{p}]({p})\n" for p in pngs)
    write_text(folder / "table.md", text)
    ws.echo(f"{name}: {folder / 'table.md'}")
    return folder


def _corpora(ws: Workspace, corpora: Sequence[str] | None, feature: str) -> list[str]:
    """The corpora to run ``feature`` on: those asked for (each must have a store or a
    root), else those of the paper that are available."""
    chosen = list(corpora) if corpora else [c for c in ("iemocap", "baum1") if ws.available(c, feature)]
    if not chosen:
        raise ConfigError("no corpus to run: give --root iemocap=DIR / --root baum1=DIR or --store CORPUS:FEATURE=PATH")
    for corpus in chosen:
        if not ws.available(corpus, feature):
            raise ConfigError(
                f"no {feature} store for {corpus}: give --root {corpus}=DIR or "
                f"--store {corpus}:{feature}=PATH, or run one feature with --feature"
            )
    return chosen


# -- the experiments ------------------------------------------------------------------------
def table1(ws: Workspace, corpora: Sequence[str] | None = None, feature: str = "mfcc") -> dict[str, Any]:
    """Utterances per emotion, acted/spontaneous, in the preliminary split (sessions 1-4 / 5)."""
    manifest = ws.manifest("iemocap", feature)
    counts: dict[str, dict[str, list[int]]] = {"train": {}, "test": {}}
    for row in manifest:
        part = "test" if row["session"] == "Session5" else "train"
        entry = counts[part].setdefault(row["emotion"], [0, 0, 0])
        entry[0] += 1
        entry[1 if row["expression"] == "acted" else 2] += 1
    rows = []
    for emotion in sorted(set(counts["train"]) | set(counts["test"])):
        ours = counts["train"].get(emotion, [0, 0, 0]) + counts["test"].get(emotion, [0, 0, 0])
        theirs = list(paper.TABLE1["train"].get(emotion, (None,) * 3)) + list(
            paper.TABLE1["test"].get(emotion, (None,) * 3)
        )
        rows.append([emotion, *ours, *theirs])
    header = [
        "emotion",
        "train total",
        "train acted",
        "train spont.",
        "test total",
        "test acted",
        "test spont.",
        "paper train total",
        "paper train acted",
        "paper train spont.",
        "paper test total",
        "paper test acted",
        "paper test spont.",
    ]
    return {"counts": counts, "paper": paper.TABLE1, "_table": markdown_table(header, rows)}


def table2(ws: Workspace, corpora: Sequence[str] | None = None, feature: str = "mfcc") -> dict[str, Any]:
    """Train on acted / spontaneous / combined sessions 1-4, test on session 5's acted and spontaneous parts."""
    store = ws.store("iemocap", feature)
    accuracy: dict[str, dict[str, float | None]] = {"acted": {}, "spontaneous": {}}
    for training in ("combined", "acted", "spontaneous"):
        protocol = Protocol(
            "split",
            by="session",
            train_values=["Session1", "Session2", "Session3", "Session4"],
            test_values=["Session5"],
            train_where=None if training == "combined" else {"expression": [training]},
        )
        results = ws.run(store, f"iemocap-{feature}-train-{training}", protocol, aux="none")
        for part in accuracy:
            accuracy[part][training] = results.get("subsets", {}).get("expression", {}).get(part, {}).get("wa")
    rows = [
        [
            part,
            *(accuracy[part][t] for t in ("combined", "acted", "spontaneous")),
            *(paper.TABLE2[part][t] for t in ("combined", "acted", "spontaneous")),
        ]
        for part in accuracy
    ]
    plot_bars(
        {f"test {p}": {f"train {t}": v for t, v in accuracy[p].items()} for p in accuracy},
        ws.out / "table2" / "table2.png",
        f"{feature.upper()} accuracy (WA) by training and test expression",
    )
    header = ["test", "train combined", "train acted", "train spont.", "paper combined", "paper acted", "paper spont."]
    return {"wa": accuracy, "paper": paper.TABLE2, "_table": markdown_table(header, rows)}


def table3(ws: Workspace, corpora: Sequence[str] | None = None, feature: str | None = None) -> dict[str, Any]:
    """WA/UWA of MFCC and wav2vec 2.0, with and without MTL, per corpus."""
    features = [feature] if feature else list(FEATURES)
    plan = {feat: _corpora(ws, corpora, feat) for feat in features}  # every store checked before any training
    results: dict[str, Any] = {}
    rows, bars = [], {}
    for feat, method in itertools.product(features, METHODS):
        row: list[Any] = [feat, METHOD_NAMES[method]]
        for corpus in plan[feat]:
            run = ws.corpus_run(corpus, feat, method)
            results.setdefault(feat, {}).setdefault(method, {})[corpus] = {
                "wa": run["wa"],
                "uwa": run["uwa"],
                "run": run["run_dir"],
            }
            reference = paper.TABLE3.get(feat, {}).get(method, {}).get(corpus, (None, None))
            row += [corpus, run["wa"], run["uwa"], *reference]
            bars[f"{corpus} {feat} {METHOD_NAMES[method]}"] = {"ours UWA": run["uwa"], "paper UWA": reference[1]}
        rows.append(row)
    plot_bars(bars, ws.out / "table3" / "table3.png", "UWA per corpus, feature and method")
    header = ["feature", "method"] + ["corpus", "WA", "UWA", "paper WA", "paper UWA"] * (
        (max(len(r) for r in rows) - 2) // 5
    )
    return {"results": results, "paper": paper.TABLE3, "_table": markdown_table(header, rows)}


def table4(ws: Workspace, corpora: Sequence[str] | None = None, feature: str = "w2v2") -> dict[str, Any]:
    """IEMOCAP UWA of our wav2vec 2.0 runs beside the earlier work the paper cites."""
    ours = {METHOD_NAMES[m]: ws.corpus_run("iemocap", feature, m)["uwa"] for m in METHODS}
    rows = [[name, "audio", "5-fold", value] for name, value in paper.TABLE4.items()]
    rows += [[f"sermtl, {name}", "audio", "5-fold", value] for name, value in ours.items()]
    return {
        "ours": ours,
        "paper": paper.TABLE4,
        "_table": markdown_table(["method", "modalities", "CV", "UWA (%)"], rows),
    }


def table5(ws: Workspace, corpora: Sequence[str] | None = None, feature: str = "w2v2") -> dict[str, Any]:
    """Same-corpus MTL against cross-corpus MTL (acted from one corpus, spontaneous from the other)."""
    from featurestore.store.merge import merge_stores, where

    names = list(corpora) if corpora else ["iemocap", "baum1"]
    if len(names) != 2:
        raise ConfigError(f"table5 needs two corpora (--corpus A --corpus B), got {names}")
    stores = {c: ws.store(c, feature) for c in names}
    manifests = {c: stored_manifest(s) for c, s in stores.items()}
    results: dict[str, Any] = {}
    settings: list[tuple[str, Path]] = []
    for corpus in names:  # same-corpus MTL needs both expressions in one corpus
        if {"acted", "spontaneous"} <= set(manifests[corpus].column("expression")):
            settings.append((corpus, stores[corpus]))
    for label, (acted, spont) in (("cross1", names), ("cross2", names[::-1])):
        emotions = {r["emotion"] for r in manifests[acted] if r["expression"] == "acted"} & {
            r["emotion"] for r in manifests[spont] if r["expression"] == "spontaneous"
        }
        if len(emotions) < 2:
            results[label] = {"skipped": f"no two emotions shared by acted {acted} and spontaneous {spont} utterances"}
            continue
        path = ws.cache / f"{label}_{acted}-acted_{spont}-spont_{feature}.zarr"
        merge_stores(
            [
                (stores[acted], where(expression="acted", emotion=sorted(emotions))),
                (stores[spont], where(expression="spontaneous", emotion=sorted(emotions))),
            ],
            path,
        )
        settings.append((label, path))
        results[label] = {"acted": acted, "spontaneous": spont, "emotions": sorted(emotions)}
    rows = []
    for label, store in settings:
        protocol = CORPUS_PROTOCOLS.get(label) or (
            Protocol("group-kfold", by="speaker", folds=5) if label.startswith("cross") else None
        )
        runs = {m: ws.run(store, f"{label}-{feature}", protocol, aux=METHODS[m]) for m in METHODS}
        entry = results.setdefault(label, {})
        entry.update({m: {"wa": runs[m]["wa"], "uwa": runs[m]["uwa"]} for m in METHODS})
        entry["era"] = runs["mtl"]["aux_accuracy"]
        reference = paper.TABLE5.get(label, {})
        rows.append(
            [
                label,
                runs["nomtl"]["wa"],
                runs["nomtl"]["uwa"],
                runs["mtl"]["wa"],
                runs["mtl"]["uwa"],
                entry["era"],
                *(reference.get("nomtl", (None, None))),
                *(reference.get("mtl", (None, None))),
                reference.get("era"),
            ]
        )
    header = [
        "setting",
        "w/o MTL WA",
        "w/o MTL UWA",
        "w. MTL WA",
        "w. MTL UWA",
        "ERA",
        "paper w/o WA",
        "paper w/o UWA",
        "paper w. WA",
        "paper w. UWA",
        "paper ERA",
    ]
    if rows:
        plot_bars(
            {r[0]: {"ERA": r[5], "paper ERA": r[10]} for r in rows},
            ws.out / "table5" / "table5.png",
            "Expression recognition accuracy: same-corpus vs cross-corpus",
        )
    return {"results": results, "paper": paper.TABLE5, "_table": markdown_table(header, rows)}


def table6(ws: Workspace, corpora: Sequence[str] | None = None, feature: str | None = None) -> dict[str, Any]:
    """Per-class recall with and without MTL."""
    features = [feature] if feature else list(FEATURES)
    chosen = {feat: _corpora(ws, corpora, feat) for feat in features}[features[0]]  # every store checked first
    results: dict[str, Any] = {}
    rows = []
    for corpus in chosen:
        for feat, method in itertools.product(features, METHODS):
            recall = ws.corpus_run(corpus, feat, method)["per_class_recall"]
            results.setdefault(corpus, {}).setdefault(feat, {})[method] = recall
            reference = paper.TABLE6.get(corpus, {}).get(feat, {}).get(method, {})
            rows += [
                [corpus, feat, METHOD_NAMES[method], emotion, value, reference.get(emotion)]
                for emotion, value in recall.items()
            ]
            plot_bars(
                {e: {"ours": v, "paper": reference.get(e)} for e, v in recall.items()},
                ws.out / "table6" / f"{corpus}_{feat}_{method}.png",
                f"{corpus} {feat} {METHOD_NAMES[method]}: recall per class",
            )
    return {
        "per_class_recall": results,
        "paper": paper.TABLE6,
        "_table": markdown_table(["corpus", "feature", "method", "emotion", "recall", "paper recall"], rows),
    }


def fig2(ws: Workspace, corpora: Sequence[str] | None = None, feature: str = "w2v2") -> dict[str, Any]:
    """Pattern separability of the emotion embeddings by emotion and by expression, with and without MTL."""
    results: dict[str, Any] = {}
    rows, bars = [], {}
    for corpus in _corpora(ws, corpora, feature):
        for method in METHODS:
            separability = ws.corpus_run(corpus, feature, method).get("separability", {})
            results.setdefault(corpus, {})[method] = separability
            rows.append([corpus, METHOD_NAMES[method], separability.get("emotion"), separability.get("expression")])
            bars[f"{corpus} {METHOD_NAMES[method]}"] = {
                "emotion": separability.get("emotion"),
                "expression": separability.get("expression"),
            }
    plot_bars(
        bars,
        ws.out / "fig2" / "fig2.png",
        "Pattern separability of the emotion embeddings",
        ylabel="mean pairwise Fisher ratio",
    )
    return {
        "separability": results,
        "paper_claim": paper.FIG2_CLAIM,
        "_table": markdown_table(["corpus", "method", "emotion separability", "expression separability"], rows),
        "_note": f"The paper gives no numbers for Fig. 2; it shows that {paper.FIG2_CLAIM}.",
    }


def alpha_sweep(
    ws: Workspace,
    corpora: Sequence[str] | None = None,
    feature: str = "w2v2",
    alpha0: Sequence[float] = (0.05, 0.1, 0.2),
    alpha_step: Sequence[float] = (0.0, 0.05),
    alpha_max: Sequence[float] = (0.5, 1.0),
) -> dict[str, Any]:
    """UWA over a grid of α0, step and cap (MTL with the expression task) against training
    without MTL: a sweep (:mod:`trainer.sweep`) on the same folds, with paired differences,
    in ``OUT/alpha-sweep/sweep``, reusing the cache."""
    corpus = _corpora(ws, corpora, feature)[0]
    settings = [{"aux": "none"}] + [
        {"aux": "expression", "alpha0": a0, "alpha_step": step, "alpha_max": cap}
        for a0, step, cap in itertools.product(alpha0, alpha_step, alpha_max)
        if cap >= a0
    ]
    base = ws.config()
    sweep = Sweep(
        ws.store(corpus, feature),
        ws.out / "alpha-sweep" / "sweep",
        base,
        CORPUS_PROTOCOLS.get(corpus),
        settings,
        [base.seed],
        baseline=0,
    )
    summary = run_sweep(sweep, progress=ws.progress)
    nomtl, *mtl = summary["settings"]
    grid = [
        {
            **{k: row["setting"][k] for k in ("alpha0", "alpha_step", "alpha_max")},
            "wa": row["wa"]["mean"],
            "uwa": row["uwa"]["mean"],
            "era": row.get("aux_accuracy", {}).get("mean"),
            "uwa_vs_nomtl": row["paired_uwa"]["mean"],
            "ci": row["paired_uwa"]["ci"],
        }
        for row in mtl
    ]
    plot_bars(
        {
            f"α0={g['alpha0']} +{g['alpha_step']} ≤{g['alpha_max']}": {"UWA": g["uwa"], "w/o MTL": nomtl["uwa"]["mean"]}
            for g in grid
        },
        ws.out / "alpha-sweep" / "alpha_sweep.png",
        f"{corpus} {feature}: UWA over α settings",
    )
    rows = [
        [
            g["alpha0"],
            g["alpha_step"],
            g["alpha_max"],
            g["wa"],
            g["uwa"],
            g["era"],
            g["uwa_vs_nomtl"],
            f"[{g['ci'][0]:.2f}, {g['ci'][1]:.2f}]" if g["ci"] else None,
        ]
        for g in grid
    ]
    rows.append(["w/o MTL", "–", "–", nomtl["wa"]["mean"], nomtl["uwa"]["mean"], None, None, None])
    return {
        "corpus": corpus,
        "grid": grid,
        "nomtl": {"wa": nomtl["wa"]["mean"], "uwa": nomtl["uwa"]["mean"]},
        "sweep": str(sweep.out),
        "_table": markdown_table(
            ["α0", "step", "cap", "WA", "UWA", "ERA", "Δ UWA vs w/o MTL (paired over folds)", "95 % CI"], rows
        ),
        "_note": f"The sweep with its paired statistics: `{sweep.out / 'sweep.md'}`.",
    }


def run_experiment(
    name: str, ws: Workspace, corpora: Sequence[str] | None = None, feature: str | None = None, **options: Any
) -> Path:
    """Run experiment ``name`` on ``corpora`` (empty or ``None``: those available) with
    ``feature`` (``None``: the paper's for it) and ``options`` (e.g. an α sweep's grid), and
    write ``OUT/<name>/{results.json, table.md, *.png}``."""
    if feature is not None:
        options["feature"] = feature
    results = EXPERIMENTS.load(name)(ws, corpora=list(corpora or []) or None, **options)
    table, note = results.pop("_table"), results.pop("_note", "")
    return _save(ws, name, results, table, note)
