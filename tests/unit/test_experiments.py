"""Every experiment end to end on generated IEMOCAP and BAUM-1 copies at tiny settings."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from featurestore.errors import ConfigError
from featurestore.synthetic import make_baum1, make_iemocap
from trainer.experiments import EXPERIMENTS, Workspace, run_experiment

TINY_TRAIN = {"epochs": 1, "channels": 8, "embedding_dim": 8, "batch_size": 16}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Workspace:
    from featurestore.features.random_models import save_random_ssl_model

    base = tmp_path_factory.mktemp("experiments")
    roots = {
        "iemocap": str(make_iemocap(base / "iemocap", utts_per_dialog=8, quirks=False)),
        "baum1": str(make_baum1(base / "baum1", speakers=5, quirks=False)),
    }
    model = save_random_ssl_model(base / "tiny-w2v2")
    return Workspace(
        out=base / "out",
        cache=base / "cache",
        roots=roots,
        model=str(model),
        device="cpu",
        train=TINY_TRAIN,
        progress=False,
        echo=lambda line: None,
    )


def numbers(tree) -> list[float | int]:
    """Every number in a JSON tree (the values a table must show)."""
    if isinstance(tree, dict):
        return [x for k, v in tree.items() if k != "paper" for x in numbers(v)]
    if isinstance(tree, list):
        return [x for v in tree for x in numbers(v)]
    return [tree] if isinstance(tree, (int, float)) and not isinstance(tree, bool) else []


def shown_as(x: float | int) -> str:
    return f"{x:.2f}" if isinstance(x, float) else str(x)


def check_outputs(folder: Path, expect_png: bool = True) -> dict:
    results = json.loads((folder / "results.json").read_text())
    table = (folder / "table.md").read_text()
    shown = set(re.findall(r"-?\d+(?:\.\d\d)?", table))
    ours = numbers({k: v for k, v in results.items() if k != "paper"})
    assert ours, "the experiment produced no numbers"
    missing = [x for x in ours if shown_as(x) not in shown]
    assert not missing, f"numbers of results.json not in table.md: {missing[:5]}"
    pngs = list(folder.glob("*.png"))
    if expect_png:
        assert pngs and all(p.read_bytes()[:8] == PNG_SIGNATURE and p.stat().st_size > 2000 for p in pngs)
        assert all(f"]({p.name})" in table for p in pngs)
    return results


def test_table1_counts(workspace) -> None:
    results = check_outputs(run_experiment("table1", workspace), expect_png=False)
    assert results["counts"]["test"]["happy"] == [4, 2, 2]
    assert (
        "| happy | 16 | 8 | 8 | 4 | 2 | 2 | 1194 | 527 | 667 | 442 | 162 | 280 |"
        in (workspace.out / "table1" / "table.md").read_text()
    )


def test_table2_trains_on_each_expression(workspace) -> None:
    results = check_outputs(run_experiment("table2", workspace))
    assert set(results["wa"]) == {"acted", "spontaneous"}
    folds = json.loads(next((workspace.out / "runs").glob("iemocap-mfcc-train-acted-*/folds.json")).read_text())
    assert folds["header"]["train_where"] == {"expression": ["acted"]}


def test_table3_table4_table6_fig2_share_runs(workspace) -> None:
    results = check_outputs(run_experiment("table3", workspace))
    assert set(results["results"]) == {"mfcc", "w2v2"} and set(results["results"]["mfcc"]["mtl"]) == {
        "iemocap",
        "baum1",
    }
    runs_before = sorted(p.name for p in (workspace.out / "runs").iterdir())
    check_outputs(run_experiment("table4", workspace), expect_png=False)
    table6 = check_outputs(run_experiment("table6", workspace))
    assert set(table6["per_class_recall"]["baum1"]["mfcc"]["mtl"]) <= {
        "angry",
        "boredom",
        "disgust",
        "fear",
        "happy",
        "sad",
    }
    fig2 = check_outputs(run_experiment("fig2", workspace))
    assert "expression" in fig2["separability"]["iemocap"]["mtl"]
    assert sorted(p.name for p in (workspace.out / "runs").iterdir()) == runs_before  # nothing retrained


def test_table5_cross_corpus(workspace) -> None:
    results = check_outputs(run_experiment("table5", workspace, feature="mfcc"))
    assert {"iemocap", "baum1", "cross1", "cross2"} <= set(results["results"])
    cross = results["results"]["cross1"]
    assert cross["acted"] == "iemocap" and cross["spontaneous"] == "baum1"
    assert set(cross["emotions"]) <= {"angry", "happy", "sad"} and cross["era"] is not None


def test_alpha_sweep_and_restart(workspace) -> None:
    grid = {"alpha0": (0.1,), "alpha_step": (0.0, 0.05), "alpha_max": (0.5,)}
    results = check_outputs(run_experiment("alpha-sweep", workspace, feature="mfcc", **grid))
    assert len(results["grid"]) == 2 and results["grid"][0]["uwa_vs_nomtl"] is not None
    sweep_runs = sorted((workspace.out / "alpha-sweep" / "sweep").glob("aux=expression*/seed_0"))
    assert len(sweep_runs) == 2 and (workspace.out / "alpha-sweep" / "sweep" / "sweep.json").is_file()
    interrupted, untouched = sweep_runs[0], sweep_runs[1]
    kept = {
        p: p.stat().st_mtime_ns
        for p in (interrupted / "fold_1" / "metrics.json", untouched / "fold_2" / "metrics.json")
    }
    (interrupted / "fold_2" / "metrics.json").unlink()  # as if killed during fold 2
    run_experiment("alpha-sweep", workspace, feature="mfcc", **grid)
    assert (interrupted / "fold_2" / "metrics.json").exists()
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # finished folds were not redone


def test_unknown_experiment(workspace) -> None:
    with pytest.raises(ConfigError, match=r"^experiment: 'table9'.*\(nearest: table6\)"):
        run_experiment("table9", workspace)
    assert set(EXPERIMENTS) == {"table1", "table2", "table3", "table4", "table5", "table6", "fig2", "alpha-sweep"}
