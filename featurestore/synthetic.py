"""Small synthetic corpora in the real corpora's layouts, for tests, ``sermtl demo`` and benchmarks.

Every ``make_<corpus>(root, ...)`` writes a corpus under ``root`` and returns the path to
give to :func:`featurestore.corpora.prepare` (the corpus folder, or the CSV file for
``make_csv``). Output depends only on the arguments: the same seed gives the same bytes.

The audio is a harmonic tone with noise whose pitch, loudness and syllable rate depend on
the emotion (and on gender), and whose pitch contour is steady for acted speech and
wandering for spontaneous speech, so both labels are learnable from the features.
With ``quirks=True`` (the default) each corpus also carries the faults met in real copies:
macOS ``._*`` files, audio without a label, labels without audio, disagreeing labels and
stray duplicates, as documented per function.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# (pitch for a male voice in Hz, RMS level, syllables per second)
_VOICE: dict[str, tuple[float, float, float]] = {
    "angry": (190.0, 0.30, 5.5),
    "happy": (230.0, 0.22, 5.0),
    "neutral": (120.0, 0.10, 4.0),
    "sad": (95.0, 0.04, 2.5),
    "boredom": (105.0, 0.06, 3.0),
    "calm": (110.0, 0.07, 3.5),
    "disgust": (140.0, 0.14, 3.5),
    "fear": (260.0, 0.16, 6.0),
    "surprise": (280.0, 0.25, 4.5),
}
_OTHER_VOICE = (160.0, 0.12, 4.0)
_JUNK = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(64)


def synth_utterance(emotion: str, expression: str, seconds: float, sr: int, seed: int, gender: str = "M") -> np.ndarray:
    """A mono float32 signal ``(round(seconds * sr),)`` whose acoustics follow the labels.

    Examples
    --------
    >>> synth_utterance("angry", "acted", 0.5, 16000, seed=1).shape
    (8000,)
    """
    rng = np.random.default_rng(seed)
    f0, level, rate = _VOICE.get(emotion, _OTHER_VOICE)
    f0 *= (1.7 if gender == "F" else 1.0) * rng.uniform(0.95, 1.05)
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    if expression == "spontaneous":  # wandering pitch: a smoothed random walk of +-20 %
        walk = np.cumsum(rng.standard_normal(n)) / np.sqrt(sr)
        contour = 1.0 + 0.2 * np.tanh(walk - walk.mean())
    else:  # steady pitch with a slight vibrato
        contour = 1.0 + 0.03 * np.sin(2 * np.pi * 5.0 * t + rng.uniform(0, 2 * np.pi))
    phase = 2 * np.pi * np.cumsum(f0 * contour) / sr
    wave = sum(np.sin(k * phase) / k for k in range(1, 5))
    syllables = 0.55 + 0.45 * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi))
    wave = wave * syllables + 0.3 * rng.standard_normal(n)
    fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.02)
    wave *= fade * level / (np.sqrt(np.mean(wave**2)) + 1e-9)
    return np.clip(wave, -0.99, 0.99).astype(np.float32)


def _seed(seed: int, name: str) -> int:
    return seed * 1_000_003 + zlib.crc32(name.encode())


def _duration(seed: int, name: str, low: float = 0.5, high: float = 1.5) -> float:
    return float(np.random.default_rng(_seed(seed, name) + 1).uniform(low, high))


def _write_wav(
    path: Path, emotion: str, expression: str, sr: int, seed: int, gender: str = "M", seconds: float | None = None
) -> float:
    import soundfile as sf

    seconds = _duration(seed, path.name) if seconds is None else seconds
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(
        str(path),
        synth_utterance(emotion, expression, seconds, sr, _seed(seed, path.name), gender),
        sr,
        subtype="PCM_16",
    )
    return seconds


def _write_mp4(path: Path, emotion: str, expression: str, sr: int, seed: int, gender: str) -> None:
    """An MP4 holding one mono AAC audio stream (BAUM-1's clips also hold video)."""
    import av

    wave = synth_utterance(emotion, expression, _duration(seed, path.name), sr, _seed(seed, path.name), gender)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=sr)
        stream.layout = "mono"
        for first in range(0, len(wave), 1024):
            frame = av.AudioFrame.from_ndarray(wave[None, first : first + 1024], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = sr, first
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def _junk(path: Path) -> None:
    """A macOS resource-fork file (``._name``) as left by copying from a Mac."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_JUNK)


# -- IEMOCAP ------------------------------------------------------------------------------
#: Label codes given to the utterances of each dialog, in turn.
IEMOCAP_CYCLE: tuple[str, ...] = ("neu", "exc", "ang", "sad", "hap", "fru", "neu", "xxx")


def make_iemocap(
    root: str | os.PathLike,
    sessions: int = 5,
    utts_per_dialog: int = 8,
    seed: int = 0,
    sr: int = 16000,
    quirks: bool = True,
) -> Path:
    """IEMOCAP layout under ``root/IEMOCAP_full_release``; returns that folder.

    Each session has an improvised dialog ``Ses0nF_impro01`` and a scripted one
    ``Ses0nM_script01_1``; utterance ``i`` of a dialog is spoken by the woman (``F``) for
    even ``i``, by the man (``M``) for odd ``i``, and labelled ``IEMOCAP_CYCLE[i % 8]``.
    Quirks: ``._`` files beside a wav and a label file, and in Session1 a wav
    (``Ses01F_impro01_F999``) with no label line.
    """
    from featurestore.corpora.iemocap import LABELS

    release = Path(root) / "IEMOCAP_full_release"
    for n in range(1, sessions + 1):
        session = release / f"Session{n}"
        for dialog in (f"Ses{n:02d}F_impro01", f"Ses{n:02d}M_script01_1"):
            expression = "spontaneous" if "impro" in dialog else "acted"
            lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
            clock = 1.0
            for i in range(utts_per_dialog):
                actor, code = "FM"[i % 2], IEMOCAP_CYCLE[i % len(IEMOCAP_CYCLE)]
                utt = f"{dialog}_{actor}{i:03d}"
                wav = session / "sentences" / "wav" / dialog / f"{utt}.wav"
                seconds = _write_wav(wav, LABELS.codes[code] or "neutral", expression, sr, seed, actor)
                lines += [
                    f"[{clock:.4f} - {clock + seconds:.4f}]\t{utt}\t{code}\t[2.5000, 3.0000, 3.0000]",
                    "C-E1:\tNeutral;\t()",
                    "A-E1:\tval 3; act 3; dom  3;\t()",
                    "",
                ]
                clock += seconds + 0.5
            label_file = session / "dialog" / "EmoEvaluation" / f"{dialog}.txt"
            label_file.parent.mkdir(parents=True, exist_ok=True)
            label_file.write_text("\n".join(lines), encoding="utf-8")
        if quirks and n == 1:
            wav_dir = session / "sentences" / "wav" / f"Ses{n:02d}F_impro01"
            _junk(wav_dir / f"._Ses{n:02d}F_impro01_F000.wav")
            _junk(session / "dialog" / "EmoEvaluation" / f"._Ses{n:02d}F_impro01.txt")
            _write_wav(wav_dir / f"Ses{n:02d}F_impro01_F999.wav", "neutral", "spontaneous", sr, seed, "F")
    return release


# -- BAUM-1 -------------------------------------------------------------------------------
#: Emotion codes given to each speaker's clips, in turn, per part (6 = interest,
#: 9 = neutral and 12 = thinking are left out by the recipe).
BAUM1_CYCLE: dict[str, tuple[int, ...]] = {"a": (1, 2, 3, 4, 5, 7, 6), "s": (1, 2, 6, 7, 8, 10, 9, 12)}
_BAUM1_HEADERS: dict[str, tuple[str, ...]] = {
    "a": ("Subject No", "Clip Name", "Emotion", "Emotion Code", "Gender"),
    "s": ("Clip Name", "Emotion", "Emotion Code", "Gender", "Notes"),
}


def make_baum1(
    root: str | os.PathLike,
    speakers: int = 2,
    seed: int = 0,
    sr: int = 44100,
    acted_folder: str = "BAUM1a_MP4_all",
    spontaneous_folder: str = "BAUM1s_MP4 - All",
    quirks: bool = True,
) -> Path:
    """BAUM-1 layout under ``root``; returns ``root``.

    Per part, speaker folders ``s001``.. hold clips ``S001_001.mp4``.. (AAC at ``sr``),
    one per code of :data:`BAUM1_CYCLE`; ``Annotations_BAUM1a.xlsx`` (clip names in lower
    case, an extra first column) and ``Annotations_BAUM1s.xlsx`` (an extra last column)
    hold a row per clip. Speakers alternate female/male. Quirks: acted clip ``S001_001``
    has the name ``Sadness`` but code 1, spontaneous clip ``S002_099.mp4`` has no row, and
    the spontaneous row ``S001_098`` has no clip.
    """
    import openpyxl

    from featurestore.corpora.baum1 import CODES, LABELS

    root = Path(root)
    for part, folder in (("a", acted_folder), ("s", spontaneous_folder)):
        expression = "acted" if part == "a" else "spontaneous"
        book = openpyxl.Workbook()
        sheet = book.active
        sheet.append(list(_BAUM1_HEADERS[part]))
        for k in range(1, speakers + 1):
            gender = "FM"[(k - 1) % 2]
            for i, code in enumerate(BAUM1_CYCLE[part], start=1):
                clip = f"S{k:03d}_{i:03d}"
                name = CODES[part][str(code)]
                _write_mp4(
                    root / folder / f"s{k:03d}" / f"{clip}.mp4", LABELS.codes[name], expression, sr, seed, gender
                )
                if quirks and part == "a" and clip == "S001_001":
                    name = "sadness"
                row = {
                    "Subject No": k,
                    "Clip Name": clip.lower() if part == "a" else clip,
                    "Emotion": name.capitalize(),
                    "Emotion Code": code,
                    "Gender": "Female" if gender == "F" else "Male",
                    "Notes": "",
                }
                sheet.append([row[h] for h in _BAUM1_HEADERS[part]])
        if quirks and part == "s":
            _write_mp4(root / folder / "s002" / "S002_099.mp4", "happy", expression, sr, seed, "M")
            sheet.append(["S001_098", "Anger", 1, "Female", ""])
        book.save(root / f"Annotations_BAUM1{part}.xlsx")
    return root


# -- EmoDB --------------------------------------------------------------------------------
def make_emodb(
    root: str | os.PathLike,
    speakers: Sequence[str] = ("03", "08", "10", "16"),
    texts: Sequence[str] = ("a01", "b02"),
    seed: int = 0,
    sr: int = 16000,
    quirks: bool = True,
) -> Path:
    """EmoDB layout ``root/wav/<spk><text><emotion>a.wav``, every emotion letter once per
    speaker and text; returns ``root``. Quirk: a ``._`` file in ``wav/``.
    """
    from featurestore.corpora.emodb import LABELS, MALE_SPEAKERS

    root = Path(root)
    for speaker in speakers:
        gender = "M" if speaker in MALE_SPEAKERS else "F"
        for text in texts:
            for letter, emotion in LABELS.codes.items():
                _write_wav(
                    root / "wav" / f"{speaker}{text}{letter}a.wav",
                    emotion,
                    "acted",
                    sr,
                    seed,
                    gender,
                    _duration(seed, f"{speaker}{text}{letter}", 0.5, 1.0),
                )
    if quirks:
        _junk(root / "wav" / f"._{speakers[0]}{texts[0]}Wa.wav")
    return root


# -- RAVDESS ------------------------------------------------------------------------------
def make_ravdess(
    root: str | os.PathLike,
    actors: Sequence[int] = (1, 2, 3, 4),
    repetitions: Sequence[int] = (1, 2),
    seed: int = 0,
    sr: int = 16000,
    quirks: bool = True,
) -> Path:
    """RAVDESS speech layout ``root/Actor_<aa>/03-01-<EE>-<II>-<SS>-<RR>-<AA>.wav``; returns ``root``.

    Per actor: 8 emotions x 2 statements x ``repetitions``, in both intensities except
    neutral (normal only): 60 files with two repetitions, as in the real corpus.
    Quirk (as in the shared ``ravdess_subset``): ``Actor_<last>/`` also holds a stray file
    named for actor ``actors[1]``, angry, normal, statement 1, repetition 1, whose audio
    differs from the real one.
    """
    from featurestore.corpora.ravdess import LABELS

    root = Path(root)
    for actor in actors:
        gender = "M" if actor % 2 else "F"
        for code, emotion in LABELS.codes.items():
            for intensity in (1,) if emotion == "neutral" else (1, 2):
                for statement in (1, 2):
                    for rep in repetitions:
                        name = f"03-01-{code}-{intensity:02d}-{statement:02d}-{rep:02d}-{actor:02d}.wav"
                        _write_wav(
                            root / f"Actor_{actor:02d}" / name,
                            emotion,
                            "acted",
                            sr,
                            seed,
                            gender,
                            _duration(seed, name, 0.5, 1.0),
                        )
    if quirks:
        name = f"03-01-05-01-01-01-{actors[1]:02d}.wav"
        _write_wav(
            root / f"Actor_{actors[-1]:02d}" / name, "angry", "acted", sr, seed + 1, "M" if actors[1] % 2 else "F", 0.7
        )
    return root


# -- URDU ---------------------------------------------------------------------------------
#: (speaker, emotion code, number of files) written by :func:`make_urdu`.
URDU_SPEAKERS: tuple[tuple[str, str, int], ...] = (
    ("SM1", "A", 3),
    ("SM2", "A", 2),
    ("SF1", "H", 2),
    ("SM3", "H", 2),
    ("SM3", "N", 2),
    ("SF9", "N", 2),
    ("SM6", "S", 3),
    ("SF10", "S", 2),
)


def make_urdu(
    root: str | os.PathLike,
    speakers: Sequence[tuple[str, str, int]] = URDU_SPEAKERS,
    seed: int = 0,
    sr: int = 44100,
    quirks: bool = True,
) -> Path:
    """URDU layout ``root/<Emotion>/S<G><id>_F<n>_<E>0<k>.wav`` (``k`` counts per emotion,
    ``n`` per speaker, as in the real names ``SF1_F1_H01``, ``SM1_F10_A010``); returns ``root``.
    Quirk: a ``._`` file in ``Angry/``.
    """
    from featurestore.corpora.urdu import FOLDERS

    root = Path(root)
    per_speaker: dict[str, int] = {}
    per_emotion: dict[str, int] = {}
    for speaker, code, count in speakers:
        for _ in range(count):
            per_speaker[speaker] = per_speaker.get(speaker, 0) + 1
            per_emotion[code] = per_emotion.get(code, 0) + 1
            name = f"{speaker}_F{per_speaker[speaker]}_{code}0{per_emotion[code]}.wav"
            _write_wav(
                root / FOLDERS[code] / name,
                FOLDERS[code].lower(),
                "spontaneous",
                sr,
                seed,
                speaker[1],
                _duration(seed, name, 0.5, 1.0),
            )
    if quirks:
        _junk(root / "Angry" / "._SM1_F1_A01.wav")
    return root


# -- generic CSV --------------------------------------------------------------------------
def make_csv(root: str | os.PathLike, name: str = "labels", seed: int = 0, sr: int = 16000) -> Path:
    """Four wavs in ``root/audio/`` and ``root/<name>.csv`` listing five utterances; returns the CSV.

    Paths are relative to the CSV; ``clip2`` is cut into two segments (``start``/``end``),
    ``clip3`` has a ``duration`` given, and an extra ``language`` column is set. The
    ``corpus`` column is left empty.
    """
    root = Path(root)
    rows = [
        ("u1", "audio/clip1.wav", "angry", "spk1", "acted", "", "", "", "en"),
        ("u2", "audio/clip2.wav", "sad", "spk1", "acted", "0.0", "0.4", "", "en"),
        ("u3", "audio/clip2.wav", "happy", "spk2", "spontaneous", "0.5", "", "", "de"),
        ("u4", "audio/clip3.wav", "neutral", "spk2", "spontaneous", "", "", "0.25", "de"),
        ("u5", "audio/clip4.wav", "sad", "spk3", "spontaneous", "", "", "", "ur"),
    ]
    for _, path, emotion, _speaker, expression, *_rest in rows:
        if not (root / path).exists():
            _write_wav(root / path, emotion, expression, sr, seed, "M", 1.0 if path.endswith("2.wav") else None)
    header = "utt_id,path,emotion,speaker,expression,start,end,duration,language,corpus"
    csv_path = root / f"{name}.csv"
    csv_path.write_text("\n".join([header, *(",".join(row) + "," for row in rows)]) + "\n", encoding="utf-8")
    return csv_path
