"""Seed ensembles (trainer.ensembles) on hand-made run files: the mean of the seeds' saved
probabilities, scored on each seed's own folds; damaged files refused in one line."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from featurestore.errors import RunError
from trainer.compare import compare_runs
from trainer.ensembles import seed_ensemble
from trainer.folds import Fold, save_folds
from trainer.folds import test_digest as digest_of
from trainer.metrics import evaluate
from trainer.runfiles import read_ensemble

TRUTH = {"a": "x", "b": "y", "c": "z", "d": "x", "e": "y", "f": "x"}
#: Per seed, per fold: the test ids and the classes of its predictions (fold 2 of seed 1
#: never trained on z; seed 2 tests f nowhere, as a k-fold draw that covers half the rows).
SEEDS = {
    1: [(["a", "b", "c"], ["x", "y", "z"]), (["d", "e", "f"], ["x", "y"])],
    2: [(["a", "d"], ["x", "y", "z"]), (["b", "c", "e"], ["x", "y", "z"])],
}


def write_seed_run(run: Path, seed: int, folds: list[tuple[list[str], list[str]]], rng) -> None:
    """A finished cv run of ``folds``: config.json, folds.json and each fold's predictions
    (random probabilities) and metrics.json."""
    run.mkdir(parents=True)
    identity = {"store": "s.zarr", "store_digest": "abc", "protocol": {"name": "kfold"}, "train": {"seed": seed}}
    (run / "config.json").write_text(json.dumps(identity))
    everything = sorted(TRUTH)
    save_folds(
        [Fold(k, [u for u in everything if u not in test], [], test) for k, (test, _) in enumerate(folds, 1)],
        run / "folds.json",
    )
    for k, (test, classes) in enumerate(folds, 1):
        fold_dir = run / f"fold_{k}"
        fold_dir.mkdir()
        probabilities = rng.dirichlet(np.ones(len(classes)), size=len(test))
        with open(fold_dir / "predictions.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["utt_id", "true", "pred", *(f"p_{c}" for c in classes)])
            for utt, p in zip(test, probabilities):
                writer.writerow([utt, TRUTH[utt], classes[int(p.argmax())], *map(repr, map(float, p))])
        (fold_dir / "metrics.json").write_text(json.dumps({"wa": 50.0, "uwa": 50.0}))


@pytest.fixture
def out(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for seed, folds in SEEDS.items():
        write_seed_run(tmp_path / "rep" / f"seed_{seed}", seed, folds, rng)
    return tmp_path / "rep"


def saved_probabilities(out: Path) -> dict[str, list[dict[str, float]]]:
    """Every utterance's saved probabilities, one dict per seed that tested it."""
    found: dict[str, list[dict[str, float]]] = {}
    for path in sorted(out.glob("seed_*/fold_*/predictions.csv")):
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                found.setdefault(row["utt_id"], []).append(
                    {k[2:]: float(v) for k, v in row.items() if k.startswith("p_")}
                )
    return found


def test_the_ensemble_is_the_mean_of_the_seeds_saved_probabilities(out) -> None:
    summary = seed_ensemble(out, [1, 2])
    with open(out / "ensemble_predictions.csv", newline="") as handle:
        rows = {row["utt_id"]: row for row in csv.DictReader(handle)}
    assert list(next(iter(rows.values()))) == ["utt_id", "true", "pred", "p_x", "p_y", "p_z", "seeds"]
    saved = saved_probabilities(out)
    assert set(rows) == set(TRUTH)
    for utt, row in rows.items():
        per_seed = saved[utt]
        assert int(row["seeds"]) == len(per_seed) == (1 if utt == "f" else 2)
        for c in "xyz":
            assert float(row[f"p_{c}"]) == pytest.approx(np.mean([p.get(c, 0.0) for p in per_seed]))
        assert row["pred"] == max("xyz", key=lambda c: float(row[f"p_{c}"])) and row["true"] == TRUTH[utt]
    assert summary == read_ensemble(out / "ensemble.json")
    assert summary["ensemble"]["members"] == 2 and summary["seeds"] == [1, 2]
    pooled = evaluate([TRUTH[u] for u in rows], [rows[u]["pred"] for u in rows], ["x", "y", "z"])
    assert summary["pooled"]["wa"] == pytest.approx(pooled["wa"]) and summary["pooled"]["n"] == 6


def test_each_seed_is_scored_on_its_own_folds(out) -> None:
    summary = seed_ensemble(out, [1, 2])
    with open(out / "ensemble_predictions.csv", newline="") as handle:
        predicted = {row["utt_id"]: row["pred"] for row in csv.DictReader(handle)}
    for seed, folds in SEEDS.items():
        result = summary["results"][str(seed)]
        assert result["seed"] == seed and [f["fold"] for f in result["folds"]] == [1, 2]
        for fold, (test, _) in zip(result["folds"], folds):
            expected = evaluate([TRUTH[u] for u in test], [predicted[u] for u in test], ["x", "y", "z"])
            assert (fold["seed"], fold["n"], fold["test_digest"]) == (seed, len(test), digest_of(test))
            assert fold["wa"] == pytest.approx(expected["wa"]) and fold["uwa"] == pytest.approx(expected["uwa"])
            assert fold["per_class_recall"] == expected["per_class_recall"]
        assert result["uwa"] == pytest.approx(np.mean([f["uwa"] for f in result["folds"]]))
    per_seed = [summary["results"][s]["uwa"] for s in ("1", "2")]
    assert summary["uwa"] == {"mean": pytest.approx(np.mean(per_seed)), "std": pytest.approx(np.std(per_seed))}


def test_compare_pairs_the_ensemble_with_the_seeds_runs(out) -> None:
    seed_ensemble(out, [1, 2])
    summary = compare_runs(out, [out / "ensemble.json"])
    assert [row["folds"] for row in summary["runs"]] == [4, 4] and summary["runs"][1]["paired"]["n"] == 4
    mine = summary["runs"][1]
    assert mine["seeds"] == [1, 2] and mine["mean"] == pytest.approx(
        read_ensemble(out / "ensemble.json")["uwa"]["mean"]
    )


def test_unfinished_folds_give_no_ensemble(out) -> None:
    (out / "seed_2" / "fold_2" / "metrics.json").unlink()
    assert seed_ensemble(out, [1, 2]) is None
    assert not (out / "ensemble.json").exists() and not (out / "ensemble_predictions.csv").exists()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda text: text.replace("utt_id", "id", 1), r"is damaged \(no 'utt_id' column\)"),
        (lambda text: text.replace("0.", "7.", 1), r", line 2: a probability that is not a number in \[0, 1\]"),
        (lambda text: re.sub(r"0\.[0-9]+", "nan", text, count=1), r", line 2: a probability that is not"),
        (lambda text: re.sub(r"0\.[0-9]+", "0.5x", text, count=1), r", line 2: a probability that is not"),
        (lambda text: text.replace(",x,", ",,", 1), r", line 2: no utterance id or true label"),
        (lambda text: text.rsplit("\n", 2)[0] + "\n", r"does not hold the test utterances of fold 1"),
        (lambda text: text + "b,y,y,0.1,0.2,0.7\n", r", line 5: an utterance listed twice"),
    ],
)
def test_damaged_predictions_are_one_line_naming_the_file(out, damage, message) -> None:
    path = out / "seed_2" / "fold_1" / "predictions.csv"
    if "listed twice" in message:
        path = out / "seed_1" / "fold_1" / "predictions.csv"
    path.write_text(damage(path.read_text()))
    with pytest.raises(RunError, match=rf"^{re.escape(str(path))}.*{message}"):
        seed_ensemble(out, [1, 2])
    assert not (out / "ensemble.json").exists()


def test_a_true_label_that_differs_between_seeds_is_refused(out) -> None:
    path = out / "seed_2" / "fold_1" / "predictions.csv"
    path.write_text(path.read_text().replace("a,x,", "a,y,", 1))
    with pytest.raises(RunError, match=r"'a' is 'y' there but 'x' in .*seed_1.*not of one store"):
        seed_ensemble(out, [1, 2])


def edited(text: str, edit) -> str:
    data = json.loads(text)
    edit(data)
    return json.dumps(data)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda text: text[: len(text) // 2], r" is damaged \(not valid JSON"),
        (lambda text: text.replace('"members": 2', '"members": 3'), r": ensemble.members: expected 2"),
        (lambda text: text.replace('"test_digest"', '"digest"'), r": results.1.folds\[0\]: expected its fold"),
        (lambda text: text.replace('"2": {', '"9": {', 1), r": runs: expected one entry per seed"),
        (lambda text: edited(text, lambda data: data["uwa"].update(mean="high")), r": uwa.mean: expected"),
        (lambda text: edited(text, lambda data: data["results"]["2"].update(seed=1)), r": results.2.seed: expected 2"),
        (lambda text: edited(text, lambda data: data["pooled"].update(uwa=101)), r": pooled.uwa: expected"),
    ],
)
def test_a_damaged_ensemble_json_is_one_line_naming_the_file(out, damage, message) -> None:
    seed_ensemble(out, [1, 2])
    path = out / "ensemble.json"
    path.write_text(damage(path.read_text()))
    for read in (lambda: read_ensemble(path), lambda: compare_runs(out, [path])):
        with pytest.raises(RunError, match=rf"^{re.escape(str(path))}{message}") as caught:
            read()
        assert "\n" not in str(caught.value)
