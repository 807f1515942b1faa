"""Reports (trainer.reports) of real run directories: report.md, its tables, its PNG figures."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from featurestore.corpora import prepare
from featurestore.errors import RunError
from featurestore.features.mfcc import MFCCExtractor
from featurestore.pipeline import extract_to_store
from featurestore.synthetic import make_iemocap
from trainer.config import TrainConfig
from trainer.cv import Protocol, run_cv
from trainer.metrics import average_folds
from trainer.plots import (
    plot_alpha_schedule,
    plot_confusion,
    plot_per_class_recall,
    plot_separability,
    plot_training_curves,
)
from trainer.reports import write_report
from trainer.runs import load_run
from trainer.tables import markdown_table

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TINY = {"epochs": 2, "channels": 8, "embedding_dim": 8, "batch_size": 32, "crop_seconds": 0.5, "device": "cpu"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Two finished 2-fold runs on one synthetic IEMOCAP MFCC store: aux expression and aux none.

    Trained on one CPU thread: a net this small gains nothing from more, and on a busy
    machine their synchronisation made each operation ~100x slower.
    """
    root = tmp_path_factory.mktemp("reports")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        manifest = prepare("iemocap", make_iemocap(root / "corpus", utts_per_dialog=8, quirks=False))
    store = root / "iemocap_mfcc.zarr"
    extract_to_store(manifest, MFCCExtractor(device="cpu"), store, progress=False)
    out = {"mtl": root / "mtl", "stl": root / "stl"}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, aux in (("mtl", "expression"), ("stl", "none")):
            run_cv(
                store,
                out[name],
                TrainConfig.from_dict({**TINY, "aux": aux}),
                Protocol("kfold", by=None, folds=2),
                progress=False,
            )
    finally:
        torch.set_num_threads(threads)
    return out


def copy_run(run: Path, dest: Path) -> Path:
    return Path(shutil.copytree(run, dest, ignore=shutil.ignore_patterns("checkpoint.pt")))


def results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert len(data) > 2000, path


def linked_pngs(report: Path) -> list[Path]:
    """The PNGs report.md links to, each checked to exist and be a valid PNG."""
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report.read_text())
    assert links and all(not Path(link).is_absolute() for link in links)
    paths = [report.parent / link for link in links]
    for path in paths:
        assert_png(path)
    return paths


def table_row(text: str, first_cell: str) -> list[str]:
    """The cells of the first table row whose first cell is ``first_cell``."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no table row starting with {first_cell!r}")


def test_markdown_table_formatting() -> None:
    table = markdown_table(["name", "x", "n"], [["a|b", 1.23456, 3], ["c", None, float("nan")]])
    assert table == ("| name | x | n |\n|---|---|---|\n| a\\|b | 1.23 | 3 |\n| c | – | – |")
    assert markdown_table(["x"], [[2 / 3]], floatfmt=".1f").splitlines()[-1] == "| 0.7 |"
    assert markdown_table(["x"], []) == "| x |\n|---|"
    with pytest.raises(ValueError, match="2 cells"):
        markdown_table(["x"], [[1, 2]])


def test_each_plot_writes_a_png_and_closes_its_figure(tmp_path) -> None:
    import matplotlib.pyplot as plt

    history = [{"epoch": e, "alpha": 0.05 + 0.05 * e, "train_loss": 2.0 / e, "valid_uwa": 40.0 + e} for e in (1, 2, 3)]
    no_valid = [{"epoch": e, "alpha": 0.0, "train_loss": 1.0 / e} for e in (1, 2)]
    recall = {"mtl": {"angry": 60.0, "sad": None}, "stl": {"angry": 50.0, "sad": 40.0}}
    paths = [
        plot_confusion([[3, 1], [0, 4]], ["angry", "sad"], tmp_path / "c.png", "confusion"),
        plot_training_curves([history, history[:2]], tmp_path / "t.png", "training"),
        plot_training_curves([no_valid], tmp_path / "sub" / "t2.png", "no validation", labels=["fold 3"]),
        plot_alpha_schedule(0.1, 0.05, 0.5, 20, tmp_path / "a.png"),
        plot_per_class_recall(recall, tmp_path / "r.png"),
        plot_per_class_recall(recall, tmp_path / "r2.png", reference={"paper": {"angry": 70.0, "sad": 55.0}}),
        plot_separability(
            {"mtl": {"emotion": 3.2, "expression": 1.1}, "stl": {"emotion": 2.5}},
            tmp_path / "s.png",
            reference={"paper MTL": {"emotion": 4.0, "expression": 0.5}},
        ),
        plot_separability({"x": {"emotion": 1200.0, "expression": 0.6}}, tmp_path / "s_log.png"),
    ]
    for path in paths:
        assert isinstance(path, Path) and path.parent.is_dir()
        assert_png(path)
    assert plt.get_fignums() == []


def test_report_of_one_run(runs, tmp_path) -> None:
    run = copy_run(runs["mtl"], tmp_path / "mtl")
    expected = results(run)
    report = write_report([run])
    assert report == run / "report.md"
    text = report.read_text()
    pooled, std = expected["pooled"], expected["std"]
    shown = (
        expected["wa"],
        expected["uwa"],
        expected["aux_accuracy"],
        pooled["wa"],
        pooled["uwa"],
        std["wa"],
        std["uwa"],
    )
    for value in shown:
        assert f"{value:.2f}" in text
    summary = table_row(text, "mtl")
    assert summary[5] == f"{expected['wa']:.2f} ± {expected['std']['wa']:.2f}"
    assert summary[6] == f"{expected['uwa']:.2f} ± {expected['std']['uwa']:.2f}"
    assert "paper WA" not in text
    for fold in expected["folds"]:  # one per-fold row each, from its metrics.json
        metrics = json.loads((run / f"fold_{fold['fold']}" / "metrics.json").read_text())
        assert table_row(text, str(fold["fold"]))[2:4] == [f"{metrics['wa']:.2f}", f"{metrics['uwa']:.2f}"]
    for label, counts in zip(expected["labels"], expected["pooled"]["confusion"]):
        assert table_row(text, label)[1:] == [str(c) for c in counts]
    acted = expected["subsets"]["expression"]["acted"]
    assert f"| mtl | expression | acted | {acted['wa']:.2f}" in text
    assert f"{expected['separability']['emotion']:.2f}" in text
    names = {p.name for p in linked_pngs(report)}
    assert names == {
        "per_class_recall.png",
        "separability.png",
        "mtl_confusion.png",
        "mtl_training.png",
        "mtl_alpha.png",
        "mtl_tsne.png",
    }
    assert all(p.parent == run / "figures" for p in linked_pngs(report))


def test_report_of_two_runs_with_paper_numbers(runs, tmp_path) -> None:
    paper = {
        "title": "Data-expression-aware MTL (2024)",
        "rows": {
            "mtl": {
                "wa": 71.23,
                "uwa": 72.34,
                "per_class_recall": {"angry": 80.0, "sad": 60.0},
                "separability": {"emotion": 2.5, "expression": 0.8},
            },
            "none": {"wa": 65.43, "uwa": 66.54},
            "SVM": {"wa": 50.0, "uwa": 48.0},
        },
    }
    report = write_report([runs["mtl"], runs["stl"]], out=tmp_path / "both", paper=paper)
    assert report == tmp_path / "both" / "report.md"
    text = report.read_text()
    assert "| paper WA | paper UWA |" in text
    for name in ("mtl", "stl"):
        expected = results(runs[name])
        row = table_row(text, name)
        assert row[5].startswith(f"{expected['wa']:.2f} ± ") and row[6].startswith(f"{expected['uwa']:.2f} ± ")
        assert row[8:10] == [f"{expected['pooled']['wa']:.2f}", f"{expected['pooled']['uwa']:.2f}"]
    assert table_row(text, "mtl")[-2:] == ["71.23", "72.34"]  # matched by run name
    assert table_row(text, "stl")[-2:] == ["65.43", "66.54"]  # matched by aux task
    assert table_row(text, "stl")[7] == "–"  # no aux accuracy without an auxiliary task
    assert "Data-expression-aware MTL (2024)" in text and "without a matching run: SVM" in text
    assert "## Run `mtl`" in text and "## Run `stl`" in text
    names = {p.name for p in linked_pngs(report)}
    assert {"mtl_alpha.png", "mtl_training.png", "stl_training.png", "stl_confusion.png"} <= names
    assert "stl_alpha.png" not in names
    assert not (runs["mtl"] / "report.md").exists()


def test_report_of_an_unfinished_run_averages_its_folds(runs, tmp_path) -> None:
    run = copy_run(runs["mtl"], tmp_path / "partial")
    (run / "results.json").unlink()
    shutil.rmtree(run / "fold_2")
    fold_1 = json.loads((run / "fold_1" / "metrics.json").read_text())
    assert load_run(run).results["uwa"] == average_folds([fold_1])["uwa"]
    text = write_report([run]).read_text()
    assert table_row(text, "partial")[4:7] == ["1", f"{fold_1['wa']:.2f} ± 0.00", f"{fold_1['uwa']:.2f} ± 0.00"]
    assert "No results.json" in text
    linked_pngs(run / "report.md")


def test_run_names_are_made_unique(runs, tmp_path) -> None:
    first = copy_run(runs["stl"], tmp_path / "a" / "run")
    second = copy_run(runs["stl"], tmp_path / "b" / "run")
    text = write_report([first, second], out=tmp_path / "r").read_text()
    assert "## Run `run`" in text and "## Run `run-2`" in text
    assert (tmp_path / "r" / "figures" / "run-2_confusion.png").is_file()


def test_not_a_run_directory(runs, tmp_path) -> None:
    with pytest.raises(RunError, match=rf"^{re.escape(str(tmp_path))} .*not a run directory\b.*\(no config\.json\)"):
        write_report([tmp_path])
    with pytest.raises(RunError, match=rf"^{re.escape(str(tmp_path / 'missing'))} .*not a run directory\b"):
        write_report([tmp_path / "missing"])
    started = tmp_path / "started"
    started.mkdir()
    shutil.copy(runs["mtl"] / "config.json", started / "config.json")
    with pytest.raises(RunError, match=rf"{re.escape(str(started))} .*no results\.json\b.*no finished fold\b"):
        write_report([started])
    with pytest.raises(RunError, match=r"\b2 runs\b.*\(--out\)"):
        write_report([runs["mtl"], runs["stl"]])
    with pytest.raises(RunError, match=r"\bno run directory\b"):
        write_report([])


def test_fold_table_lists_the_averaged_epochs_of_an_average_best_run(runs, tmp_path) -> None:
    run = copy_run(runs["mtl"], tmp_path / "avg")
    saved = results(run)
    assert "averaged epochs" not in write_report([run]).read_text()  # a run of single best epochs
    for fold in saved["folds"]:
        fold["averaged_epochs"] = [1, 2]
    (run / "results.json").write_text(json.dumps(saved))
    text = write_report([run]).read_text()
    assert "averaged epochs" in text and table_row(text, str(saved["folds"][0]["fold"]))[-1] == "1, 2"
