"""``sermtl sweep``: settings × seeds on the same folds, paired statistics, resume, and bad
input refused before anything is written."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import scipy.stats

from featurestore.errors import ConfigError
from tests.cli.test_cli import run
from trainer.stats import paired_difference
from trainer.sweep import parse_grid

TINY = [
    "--epochs",
    "1",
    "--channels",
    "8",
    "--embedding-dim",
    "8",
    "--batch-size",
    "8",
    "--device",
    "cpu",
    "--protocol",
    "group-kfold",
    "--by",
    "speaker",
    "--folds",
    "2",
]


@pytest.fixture(scope="module")
def swept(iemocap_mfcc_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "s"
    result = run(
        "sweep",
        "--store",
        iemocap_mfcc_store,
        *TINY,
        "--grid",
        "aux=none,expression",
        "--grid",
        "alpha0=0.1,0.3",
        "--repeats",
        "2",
        "--baseline",
        "aux=none,alpha0=0.1",
        "--out",
        out,
    )
    return out, result


def test_every_setting_and_seed_is_a_run_on_the_same_folds(swept) -> None:
    out, result = swept
    summary = json.loads((out / "sweep.json").read_text())
    names = [row["name"] for row in summary["settings"]]
    assert names == [
        "aux=none,alpha0=0.1",
        "aux=none,alpha0=0.3",
        "aux=expression,alpha0=0.1",
        "aux=expression,alpha0=0.3",
    ]
    assert summary["baseline"] == "aux=none,alpha0=0.1" and summary["seeds"] == [0, 1]
    for row in summary["settings"]:
        for seed in (0, 1):
            run_dir = out / row["dir"] / f"seed_{seed}"
            config = json.loads((run_dir / "config.json").read_text())
            assert config["train"]["seed"] == seed and config["train"]["aux"] == row["setting"]["aux"]
            assert config["train"]["alpha0"] == row["setting"]["alpha0"]
            folds = json.loads((run_dir / "folds.json").read_text())["folds"]
            baseline_folds = json.loads(
                (out / summary["settings"][0]["dir"] / f"seed_{seed}" / "folds.json").read_text()
            )["folds"]
            assert folds == baseline_folds  # paired: the same folds for every setting of a seed
    assert (out / "sweep.png").stat().st_size > 0 and "Wilcoxon" in (out / "sweep.md").read_text()
    assert "aux=expression,alpha0=0.3" in result.output


def test_report_on_a_sweep_directory(swept, tmp_path) -> None:
    out, _ = swept
    report = run("report", out, "--out", tmp_path / "report").output.strip().splitlines()[-1]
    text = open(report).read()
    assert "## Sweep" in text and "Wilcoxon" in text and "aux=expression,alpha0=0.3 seed 1" in text


def test_paired_differences_match_the_runs_and_scipy(swept) -> None:
    out, _ = swept
    summary = json.loads((out / "sweep.json").read_text())
    base = summary["settings"][0]
    other = summary["settings"][2]
    assert base["paired_uwa"] is None
    pairs = other["paired_uwa"]["pairs"]
    assert len(pairs) == 4  # 2 seeds x 2 folds

    def uwa(row, seed, fold):
        results = json.loads((out / row["dir"] / f"seed_{seed}" / "results.json").read_text())
        return next(f["uwa"] for f in results["folds"] if f["fold"] == fold)

    a = [uwa(other, s, f) for s, f in pairs]
    b = [uwa(base, s, f) for s, f in pairs]
    assert other["paired_uwa"]["mean"] == pytest.approx(sum(x - y for x, y in zip(a, b)) / 4)
    ci = scipy.stats.ttest_rel(a, b).confidence_interval(0.95)
    if other["paired_uwa"]["ci"] is not None and other["paired_uwa"]["std"] > 0:
        assert other["paired_uwa"]["ci"] == pytest.approx([ci.low, ci.high])


def test_paired_statistics_on_a_known_example() -> None:
    a, b = [72.0, 65.5, 70.0, 68.0, 71.5, 66.0], [70.0, 66.0, 67.5, 64.0, 69.0, 66.5]
    stats = paired_difference(a, b)
    test = scipy.stats.ttest_rel(a, b)
    assert stats["mean"] == pytest.approx(1.6666667)
    assert stats["ci"] == pytest.approx(list(test.confidence_interval(0.95)))
    assert stats["wilcoxon_p"] == pytest.approx(scipy.stats.wilcoxon([x - y for x, y in zip(a, b)]).pvalue)
    assert paired_difference([1, 2], [1, 2])["wilcoxon_p"] == 1.0 and paired_difference([1], [0])["ci"] is None


def test_an_interrupted_sweep_resumes_without_retraining(swept, iemocap_mfcc_store, tmp_path) -> None:
    out, _ = swept
    copy = tmp_path / "s"
    shutil.copytree(out, copy)
    summary = json.loads((copy / "sweep.json").read_text())
    victim = copy / summary["settings"][3]["dir"] / "seed_1" / "fold_2"
    kept = copy / summary["settings"][0]["dir"] / "seed_0" / "fold_1" / "metrics.json"
    stamp = kept.stat().st_mtime_ns
    shutil.rmtree(victim)
    (copy / "sweep.json").unlink()
    run(
        "sweep",
        "--store",
        iemocap_mfcc_store,
        *TINY,
        "--grid",
        "aux=none,expression",
        "--grid",
        "alpha0=0.1,0.3",
        "--repeats",
        "2",
        "--baseline",
        "aux=none,alpha0=0.1",
        "--out",
        copy,
    )
    assert (victim / "metrics.json").is_file() and kept.stat().st_mtime_ns == stamp
    assert json.loads((copy / "sweep.json").read_text()) == summary


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--grid", "chanels=8,16"], "unknown option 'chanels' (nearest: channels)"),
        (["--grid", "channels=8,x"], "--channels: 'x' is not an integer"),
        (["--grid", "channels=8,12"], "--channels must be in [8, 8192], a multiple of 8, got 12"),
        (["--grid", "channels="], "--grid expects KEY=V1,V2"),
        ([], "the grid is empty"),
        (["--grid", "seed=1,2"], "use --repeats"),
        (
            ["--grid", "aux=none,expression", "--baseline", "aux=gender"],
            "--baseline aux=gender: no setting of the grid match",
        ),
        (["--grid", "alpha0=0.1", "--grid", "alpha0=0.2"], "--grid alpha0 is given twice"),
    ],
)
def test_bad_grids_are_one_line_and_write_nothing(iemocap_mfcc_store, tmp_path, flags, message) -> None:
    result = run("sweep", "--store", iemocap_mfcc_store, *TINY, *flags, "--out", tmp_path / "s", ok=False)
    assert result.exit_code == 1 and message in result.output and len(result.output.strip().splitlines()) == 1, (
        result.output
    )
    assert not (tmp_path / "s").exists()


def test_a_sweep_directory_of_another_grid_is_refused(swept, iemocap_mfcc_store) -> None:
    out, _ = swept
    result = run("sweep", "--store", iemocap_mfcc_store, *TINY, "--grid", "aux=none,gender", "--out", out, ok=False)
    assert "was made with another settings" in result.output


def test_grid_files_and_parsing(tmp_path) -> None:
    assert parse_grid(["channels=8,16"]) == [{"channels": 8}, {"channels": 16}]
    path = tmp_path / "grid.yaml"
    path.write_text("- {channels: 8}\n- {channels: 16, batchnorm: precise}\n")
    from trainer.sweep import read_grid_file

    assert read_grid_file(path) == [{"channels": 8}, {"channels": 16, "batchnorm": "precise"}]
    path.write_text("channels: 8\n")
    with pytest.raises(
        ConfigError, match=rf"^--grid-file {re.escape(str(path))}: expected a list\b.*\{{'channels': 8\}}"
    ):
        read_grid_file(path)


def test_doctests() -> None:
    import doctest

    import trainer.stats
    import trainer.sweep

    for module in (trainer.stats, trainer.sweep):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize(
    "name, text, problem",
    [
        ("sweep.json", '{"settings": [{"name": "x"}]}', "baseline: missing"),
        (
            "sweep.json",
            '{"baseline": "a", "seeds": [0], "settings": [{"name": "x", "dir": "../../etc"}]}',
            "settings[0].wa: missing",
        ),
        ("repeats.json", '{"seeds": [0]}', "wa: missing"),
        (
            "repeats.json",
            '{"seeds": [0, 1], "wa": {}, "uwa": {}, "pooled_uwa": {}, "runs": {"0": {"wa": 1, "uwa": 1, "pooled_uwa": 1}}}',
            "runs: expected one entry per seed",
        ),
    ],
)
def test_report_on_a_damaged_summary_is_one_line(tmp_path, name, text, problem) -> None:
    (tmp_path / name).write_text(text)
    result = run("report", tmp_path, ok=False)
    assert result.exit_code == 1 and f"{name}: {problem}" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    import matplotlib.pyplot as plt

    assert plt.get_fignums() == []  # no figure left open by the refused plot


def test_compare_pairs_finished_runs_as_the_sweep_does_and_refuses_other_folds(
    swept, iemocap_mfcc_store, tmp_path
) -> None:
    out, _ = swept
    summary = json.loads((out / "sweep.json").read_text())
    base, other = summary["settings"][0], summary["settings"][2]
    compared = json.loads(run("compare", out / base["dir"], out / other["dir"], "--json").output)["runs"][1]
    assert compared["paired"]["pairs"] == other["paired_uwa"]["pairs"]
    for key in ("mean", "ci", "wilcoxon_p", "n"):
        assert compared["paired"][key] == pytest.approx(other["paired_uwa"][key])
    assert (compared["mean"], compared["std"]) == pytest.approx((other["uwa"]["mean"], other["uwa"]["std"]))
    one_seed = json.loads(run("compare", out / base["dir"] / "seed_1", out / other["dir"], "--json").output)["runs"][1]
    assert one_seed["paired"]["n"] == 2 and all(seed == 1 for seed, _ in one_seed["paired"]["pairs"])
    table = run("compare", out / base["dir"], out / other["dir"], "--metric", "wa").output
    assert "| Δ wa |" in table and f"{compared['paired']['n']} |" in table
    svm = tmp_path / "svm.json"
    run("baseline", "--store", iemocap_mfcc_store, *TINY[10:], "--repeats", "2", "--out", svm)
    against_svm = json.loads(run("compare", svm, out / other["dir"], "--json").output)["runs"]
    svm_folds = {
        (int(seed), f["fold"]): f["uwa"]
        for seed, r in json.loads(svm.read_text())["results"].items()
        for f in r["folds"]
    }
    ecapa_folds = {
        (seed, fold): json.loads((out / other["dir"] / f"seed_{seed}" / f"fold_{fold}" / "metrics.json").read_text())[
            "uwa"
        ]
        for seed, fold in svm_folds
    }
    expected = paired_difference([ecapa_folds[k] for k in sorted(svm_folds)], [svm_folds[k] for k in sorted(svm_folds)])
    assert against_svm[1]["paired"]["n"] == 4 and against_svm[1]["paired"]["mean"] == pytest.approx(expected["mean"])
    by_session = tmp_path / "by_session"
    run(
        "cv",
        "--store",
        iemocap_mfcc_store,
        *TINY[:10],
        "--protocol",
        "loso",
        "--by",
        "session",
        "--aux",
        "none",
        "--out",
        by_session,
    )
    for argv, message in [
        ((out / base["dir"] / "seed_0", by_session), "seed 0 fold 1 tests other utterances"),
        ((out / base["dir"], out / other["dir"], "--metric", "nope"), "--metric nope"),
        ((tmp_path, out / other["dir"]), "neither a cv run"),
        (
            (out / base["dir"] / "seed_0" / "config.json", out / other["dir"]),
            "not the results of sermtl baseline --out",
        ),
        ((_without_seeds(svm, tmp_path / "old.json"), out / other["dir"]), "no seed or test-fold digest"),
    ]:
        refused = run("compare", *argv, ok=False)
        assert refused.exit_code == 1 and refused.output.count("error:") == 1 and message in refused.output, (
            refused.output
        )


def _without_seeds(results_json, out):
    """SVM results as an older sermtl wrote them: no seed recorded."""
    data = json.loads(results_json.read_text())
    for results in data["results"].values():
        results.pop("seed")
    out.write_text(json.dumps(data))
    return out
