"""Fold protocols (trainer.folds) on in-memory manifests."""

from __future__ import annotations

import collections
import json
import re

import pytest

from featurestore.errors import ConfigError, RunError
from featurestore.manifest import Manifest
from trainer.folds import (
    PROTOCOLS,
    Fold,
    FoldList,
    check_folds,
    load_folds,
    make_folds,
    natural_key,
    save_folds,
)

EMOTIONS = ["angry", "happy", "neutral", "sad"]


def make_manifest(sessions: int = 5, per_speaker=(13, 9, 17, 11, 8, 14, 10, 16, 12, 7)) -> Manifest:
    """IEMOCAP-like: a man and a woman per session, unequal speaker sizes, 4 emotions, 2 expressions."""
    rows = []
    for s in range(1, sessions + 1):
        for g, gender in enumerate("FM"):
            speaker = f"Ses{s:02d}{gender}"
            for i in range(per_speaker[(2 * (s - 1) + g) % len(per_speaker)]):
                rows.append(
                    {
                        "utt_id": f"{speaker}_{i:03d}",
                        "path": f"/data/{speaker}_{i:03d}.wav",
                        "emotion": EMOTIONS[(i + s) % 4],
                        "speaker": speaker,
                        "gender": gender,
                        "session": f"Session{s}",
                        "expression": "acted" if i % 3 else "spontaneous",
                    }
                )
    return Manifest(rows)


@pytest.fixture(scope="module")
def manifest() -> Manifest:
    return make_manifest()


def column_of(manifest: Manifest, ids, column: str) -> set:
    return {manifest[u][column] for u in ids}


def assert_partition(fold: Fold, manifest: Manifest) -> None:
    """train/valid/test disjoint, each in manifest order, covering the manifest."""
    train, valid, test = set(fold.train), set(fold.valid), set(fold.test)
    assert not (train & valid or train & test or valid & test)
    assert train | valid | test == set(manifest.ids())
    order = {u: i for i, u in enumerate(manifest.ids())}
    for ids in (fold.train, fold.valid, fold.test):
        assert [order[u] for u in ids] == sorted(order[u] for u in ids)


def test_fold_dict_round_trip():
    fold = Fold(2, ["a", "b"], ["c"], ["d"])
    assert fold.to_dict() == {"fold": 2, "train": ["a", "b"], "valid": ["c"], "test": ["d"]}
    assert Fold.from_dict(fold.to_dict()) == fold


def test_natural_key_orders_numbers_by_value():
    assert sorted(["Session10", "Session2", "Session1"], key=natural_key) == ["Session1", "Session2", "Session10"]
    assert sorted(["10", "9", "x"], key=natural_key) == ["9", "10", "x"]


def test_loso_one_fold_per_session_tests_each_row_once(manifest):
    folds = make_folds(manifest, "loso", by="session")
    assert [f.fold for f in folds] == [1, 2, 3, 4, 5]
    assert folds.params["test_groups"] == [[f"Session{k}"] for k in range(1, 6)]
    tested = collections.Counter(u for f in folds for u in f.test)
    assert set(tested) == set(manifest.ids()) and set(tested.values()) == {1}
    for fold in folds:
        assert_partition(fold, manifest)
        assert column_of(manifest, fold.test, "session") == {f"Session{fold.fold}"}
        assert f"Session{fold.fold}" not in column_of(manifest, fold.train + fold.valid, "session")
        rest = len(fold.train) + len(fold.valid)
        assert len(fold.valid) == round(0.2 * rest)
        # stratified: each emotion's validation share within one row of 20 %
        pool = collections.Counter(manifest[u]["emotion"] for u in fold.train + fold.valid)
        valid = collections.Counter(manifest[u]["emotion"] for u in fold.valid)
        for emotion, count in pool.items():
            assert abs(valid[emotion] - 0.2 * count) <= 1
    check_folds(folds, manifest, group_column="session")


def test_loso_sorts_values_naturally_and_keeps_a_training_row_per_class():
    rows = [
        {
            "utt_id": f"u{i}",
            "path": "/x.wav",
            "emotion": "sad" if i < 6 else "fear",
            "speaker": "s",
            "session": ["Session10", "Session2", "Session1"][i % 3],
        }
        for i in range(9)
    ]
    rows[8]["emotion"] = "sad"
    manifest = Manifest(rows)
    folds = make_folds(manifest, "loso", by="session", valid_fraction=0.5)
    assert folds.params["test_groups"] == [["Session1"], ["Session2"], ["Session10"]]
    check_folds(folds, manifest)  # the lone training 'fear' row is never moved to validation


def test_kfold_is_80_10_10_with_disjoint_test_sets():
    manifest = make_manifest(per_speaker=(23, 19, 21, 20, 17))  # 200 rows
    folds = make_folds(manifest, "kfold", seed=3)
    assert [f.fold for f in folds] == [1, 2, 3, 4, 5]
    n = len(manifest)
    tests, valids = set(), set()
    for fold in folds:
        assert_partition(fold, manifest)
        assert abs(len(fold.test) - n / 10) <= 1 and abs(len(fold.valid) - n / 10) <= 1
        assert not tests & set(fold.test) and not valids & set(fold.valid)
        tests |= set(fold.test)
        valids |= set(fold.valid)
        for emotion, count in manifest.counts("emotion").items():  # stratified within a row
            in_test = sum(manifest[u]["emotion"] == emotion for u in fold.test)
            assert abs(in_test - count / 10) <= 1
    assert len(tests) == n // 2 and not tests & valids
    assert folds.params == {"protocol": "kfold", "folds": 5, "stratify": "emotion", "seed": 3}
    check_folds(folds, manifest)


def test_kfold_parts_follow_folds(manifest):
    folds = make_folds(manifest, "kfold", folds=10, by="session", valid_fraction=0.3)
    assert folds.params == {"protocol": "kfold", "folds": 10, "stratify": "emotion", "seed": 0}
    assert len(folds) == 10
    assert all(abs(len(f.test) - len(manifest) / 20) <= 1 for f in folds)


def test_group_kfold_is_speaker_independent_and_balanced(manifest):
    sizes = manifest.counts("speaker")
    folds = make_folds(manifest, "group-kfold", by="speaker", folds=4, seed=1)
    assert [f.fold for f in folds] == [1, 2, 3, 4]
    tested = collections.Counter(u for f in folds for u in f.test)
    assert set(tested) == set(manifest.ids()) and set(tested.values()) == {1}
    lengths = [len(f.test) for f in folds]
    assert max(lengths) - min(lengths) <= max(sizes.values())
    for fold, groups in zip(folds, folds.params["test_groups"]):
        assert_partition(fold, manifest)
        train, valid, test = (column_of(manifest, ids, "speaker") for ids in (fold.train, fold.valid, fold.test))
        assert test == set(groups)
        assert valid and not (train & valid or train & test or valid & test)
        assert all(sum(manifest[u]["speaker"] == s for u in fold.valid) == sizes[s] for s in valid)
        rest = len(fold.train) + len(fold.valid)
        assert abs(len(fold.valid) - 0.2 * rest) <= max(sizes.values())
    check_folds(folds, manifest, group_column="speaker")


def test_group_kfold_without_validation(manifest):
    folds = make_folds(manifest, "group-kfold", by="session", valid_fraction=0.0)
    assert all(f.valid == [] for f in folds)
    check_folds(folds, manifest, group_column="session")


def test_split_matches_values_and_80_20(manifest):
    train_values = ["Session1", "Session2", "Session3", "Session4"]
    folds = make_folds(manifest, "split", by="session", train_values=train_values, test_values=["Session5"])
    assert len(folds) == 1 and folds[0].fold == 1
    fold = folds[0]
    assert_partition(fold, manifest)
    assert column_of(manifest, fold.test, "session") == {"Session5"}
    assert column_of(manifest, fold.train + fold.valid, "session") == set(train_values)
    assert len(fold.valid) == round(0.2 * (len(fold.train) + len(fold.valid)))
    assert folds.params["train_values"] == train_values and folds.params["test_values"] == ["Session5"]
    default = make_folds(manifest, "split", by="session", test_values=["Session5"])
    assert default[0] == fold  # train values default to every other value


def test_split_leaves_out_unlisted_values_and_matches_numbers_as_text():
    manifest = Manifest(
        [
            {"utt_id": f"u{i}", "path": "/x.wav", "emotion": EMOTIONS[i % 4], "speaker": "s", "session": i % 3 + 1}
            for i in range(30)
        ]
    )
    fold = make_folds(manifest, "split", by="session", train_values=["1"], test_values=[3])[0]
    assert column_of(manifest, fold.train + fold.valid, "session") == {1}
    assert column_of(manifest, fold.test, "session") == {3}
    assert len(fold.train) + len(fold.valid) + len(fold.test) == 20


@pytest.mark.parametrize(
    "protocol, options",
    [
        ("loso", {"by": "session"}),
        ("kfold", {}),
        ("group-kfold", {"by": "speaker"}),
        ("split", {"by": "session", "test_values": ["Session5"]}),
    ],
)
def test_same_seed_same_folds_other_seed_other_validation(manifest, protocol, options):
    first = make_folds(manifest, protocol, seed=7, **options)
    again = make_folds(manifest, protocol, seed=7, **options)
    other = make_folds(manifest, protocol, seed=8, **options)
    assert [f.to_dict() for f in first] == [f.to_dict() for f in again]
    assert [f.valid for f in first] != [f.valid for f in other]


def test_save_load_round_trip(manifest, tmp_path):
    folds = make_folds(manifest, "loso", by="session", seed=4)
    path = save_folds(folds, tmp_path / "splits" / "iemocap_loso.json")
    data = json.loads(path.read_text())
    assert data["header"]["protocol"] == "loso" and data["header"]["by"] == "session"
    assert [f["fold"] for f in data["folds"]] == [1, 2, 3, 4, 5]
    loaded, header = load_folds(path)
    assert isinstance(loaded, FoldList) and loaded == folds
    assert header == folds.params == loaded.params
    save_folds(loaded, tmp_path / "again.json")
    assert (tmp_path / "again.json").read_text() == path.read_text()
    save_folds(folds, tmp_path / "extra.json", {"seed": 4, "corpus": "iemocap"})
    assert load_folds(tmp_path / "extra.json")[1] == {**folds.params, "corpus": "iemocap"}


def test_save_plain_list_has_empty_header(tmp_path):
    path = save_folds([Fold(1, ["a"], [], ["b"])], tmp_path / "f.json")
    folds, header = load_folds(path)
    assert header == {} and folds == [Fold(1, ["a"], [], ["b"])]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("{not json", r"bad\.json\b.*not valid JSON"),
        ('{"folds": []}', r"bad\.json: header: missing"),
        ('{"header": {}, "folds": [{"fold": 1, "train": []}]}', r"bad\.json: folds\[0\]\.valid: missing"),
        (
            '{"header": {}, "folds": [{"fold": 1e400, "train": [], "valid": [], "test": []}]}',
            r"bad\.json: folds\[0\]\.fold:.*\[1, 1000\], got inf",
        ),
        (
            '{"header": {}, "folds": [{"fold": 1, "train": [7], "valid": [], "test": []}]}',
            r"bad\.json: folds\[0\]\.train\[0\]: expected text\b.*got 7",
        ),
    ],
)
def test_load_refuses_bad_files(tmp_path, text, expected):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(RunError, match=expected) as info:
        load_folds(path)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=rf"not found: {re.escape(str(tmp_path / 'missing.json'))}"):
        load_folds(tmp_path / "missing.json")


@pytest.mark.parametrize(
    "protocol, options, expected",
    [
        ("lopo", {}, r"--protocol: 'lopo'.*\bloso, kfold, group-kfold, split\b"),
        ("loso", {}, r"'loso' needs --by\b"),
        ("loso", {"by": "sesion"}, r"--by 'sesion'.*column.*\(columns: utt_id, path\b"),
        ("group-kfold", {"by": "room"}, r"--by 'room'.*column"),
        ("loso", {"by": "corpus"}, r"--by 'corpus': 117 row\(s\).*'Ses01F_000'"),
        ("loso", {"by": "gender", "stratify": "mood"}, r"--stratify 'mood'.*column"),
        ("kfold", {"folds": 1}, r"--folds\b.*at least 2, got 1$"),
        ("group-kfold", {"by": "session", "folds": 6}, r"--folds 6\b.*\b5 values of --by 'session'"),
        ("group-kfold", {"by": "gender", "folds": 2}, r"fold 1\b.*one training value of --by 'gender'"),
        ("loso", {"by": "session", "valid_fraction": 1.0}, r"--valid-fraction\b.*\[0, 1\), got 1\.0$"),
        ("split", {"by": "session", "valid_fraction": -0.1}, r"--valid-fraction\b.*\[0, 1\), got -0\.1$"),
        ("loso", {"by": "session", "seed": -1}, r"--seed\b.*non-negative.*got -1$"),
        (
            "loso",
            {"by": "session", "test_values": ["Session5"]},
            r"--train-values/--test-values\b.*--protocol split only, not 'loso'",
        ),
        (
            "split",
            {"by": "session"},
            r"'split' needs --test-values \(values of --by 'session': Session1, Session2\b",
        ),
        (
            "split",
            {"by": "session", "test_values": ["Session6"]},
            r"--test-values: 'Session6'.*--by 'session' \(values: Session1, Session2, Session3, Session4, Session5\)",
        ),
        (
            "split",
            {"by": "session", "train_values": ["Session0"], "test_values": ["Session5"]},
            r"--train-values: 'Session0'.*--by 'session'",
        ),
        (
            "split",
            {"by": "session", "train_values": ["Session4", "Session5"], "test_values": ["Session5"]},
            r"'Session5'.*both --train-values and --test-values",
        ),
    ],
)
def test_errors_name_the_flag(manifest, protocol, options, expected):
    with pytest.raises(ConfigError, match=expected) as info:
        make_folds(manifest, protocol, **options)
    assert "\n" not in str(info.value)


def test_errors_on_too_few_values_or_rows():
    one_session = Manifest(
        [
            {"utt_id": f"u{i}", "path": "/x.wav", "emotion": "sad", "speaker": "s", "session": "Session1"}
            for i in range(6)
        ]
    )
    with pytest.raises(ConfigError, match=r"^loso\b.*2 values of --by 'session', found 1: Session1$"):
        make_folds(one_session, "loso", by="session")
    with pytest.raises(ConfigError, match=r"^group-kfold\b.*2 values of --by 'speaker'"):
        make_folds(one_session, "group-kfold", by="speaker")
    with pytest.raises(ConfigError, match=r"--folds 5\b.*only 6 rows"):
        make_folds(one_session, "kfold", folds=5)
    with pytest.raises(ConfigError, match=r"^manifest\b.*no rows"):
        make_folds(Manifest([]), "kfold")
    assert set(PROTOCOLS) == {"loso", "kfold", "group-kfold", "split", "file"}


# -- check_folds -----------------------------------------------------------------------------
@pytest.fixture
def small() -> Manifest:
    labels = ["angry", "sad", "angry", "sad", "fear", "angry", "sad", "fear"]
    return Manifest(
        [{"utt_id": f"u{i}", "path": "/x.wav", "emotion": e, "speaker": f"s{i % 4}"} for i, e in enumerate(labels)]
    )


def test_check_folds_accepts_good_folds(small):
    check_folds([Fold(1, ["u0", "u1", "u4"], ["u2"], ["u3", "u7"])], small)


@pytest.mark.parametrize(
    "fold, expected",
    [
        (Fold(3, ["u0", "u1", "u2"], [], ["u3", "u4", "u7"]), r"^fold 3: class 'fear'.*\(2 in test\)$"),
        (Fold(2, ["u0", "u1", "u2", "u3"], ["u4"], ["u5"]), r"^fold 2: class 'fear'.*\(1 in valid\)$"),
        (Fold(1, ["u0", "u1", "u4"], ["u2"], ["u2", "u3"]), r"^fold 1: 1 utterance\(s\).*valid and test.*'u2'"),
        (Fold(1, ["u0", "u1", "u4", "u3"], [], ["u3"]), r"^fold 1: 1 utterance\(s\).*train and test.*'u3'"),
        (Fold(1, ["u0", "u1", "u4"], [], []), r"^fold 1:.*\btest set\b.*empty"),
        (Fold(1, [], [], ["u0"]), r"^fold 1:.*\btrain set\b.*empty"),
        (Fold(1, ["u0", "u1", "u4"], [], ["u9"]), r"^fold 1: test\b.*'u9'.*\bmanifest$"),
        (Fold(1, ["u0", "u0", "u1", "u4"], [], ["u3"]), r"^fold 1: train\b.*'u0' twice$"),
    ],
)
def test_check_folds_refuses(small, fold, expected):
    with pytest.raises(ConfigError, match=expected):
        check_folds([fold], small)


def test_check_folds_group_leak_and_fold_ids(small):
    leaky = Fold(1, ["u0", "u1", "u4"], [], ["u5"])  # u1 and u5 share speaker s1
    check_folds([leaky], small)
    with pytest.raises(ConfigError, match=r"^fold 1: speaker 's1'.*\btest\b.*train/valid"):
        check_folds([leaky], small, group_column="speaker")
    good = Fold(1, ["u0", "u1", "u4"], [], ["u3"])
    with pytest.raises(ConfigError, match=r"fold ids\b.*count from 1, got \[0\]$"):
        check_folds([Fold(0, good.train, [], good.test)], small)
    with pytest.raises(ConfigError, match=r"fold ids\b.*distinct.*got \[1, 1\]$"):
        check_folds([good, good], small)
    with pytest.raises(ConfigError, match=r"'mood'.*column"):
        check_folds([good], small, label_column="mood")
