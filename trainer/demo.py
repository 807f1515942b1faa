"""The demo job: a generated corpus through every stage, from audio to a report.

Runs with no corpus, GPU or network:

1. writes a small synthetic corpus in the IEMOCAP layout
   (:func:`featurestore.synthetic.make_iemocap`: 5 sessions, 10 speakers, four emotions that
   differ in pitch and energy, scripted = acted and improvised = spontaneous dialogs that
   differ in pitch movement), and prepares its manifest with the real IEMOCAP recipe;
2. extracts 40-d MFCC into a Zarr store, and the hidden states of a **tiny randomly
   initialised wav2vec2** (built on the spot: the real ``facebook/wav2vec2-large-960h``
   needs a download) into an HDF5 store, and verifies both;
3. runs leave-one-session-out cross-validation of a small ECAPA-TDNN on each store, with and
   without the expression task (MTL);
4. writes ``report.md`` with tables and plots over the four runs.

Everything goes under ``out``; re-running reuses what is there.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from featurestore.atomic import write_json, write_text
from featurestore.corpora import prepare
from featurestore.errors import StoreError
from featurestore.features import build_extractor
from featurestore.features.random_models import save_random_ssl_model
from featurestore.pipeline import extract_to_store
from featurestore.synthetic import make_iemocap
from featurestore.verify import verify_store
from trainer.config import TrainConfig, read_config_file
from trainer.cv import Protocol, run_cv
from trainer.reports import write_report

#: The preset the demo trains with: small enough for 2 CPU cores in a few minutes, large
#: enough to learn the demo corpus.
DEMO_PRESET = "tiny"
NOTE = (
    "This is the demo on a generated corpus in the IEMOCAP layout. The `w2v2` store holds the hidden states "
    "of a tiny wav2vec2 with random weights built on the spot (2 layers, 32 dims), standing in for "
    "`facebook/wav2vec2-large-960h`, which needs a download: its numbers say that the pipeline works, "
    "not how well wav2vec 2.0 does."
)


def run_demo(
    out: str | Path, utts_per_dialog: int = 16, progress: bool = True, echo: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run the demo under ``out``; returns a summary (also written to ``out/demo.json``)."""
    out = Path(out)
    release = out / "corpus" / "IEMOCAP_full_release"
    if not release.is_dir():
        echo(f"writing a synthetic IEMOCAP-layout corpus to {release}")
        make_iemocap(out / "corpus", utts_per_dialog=utts_per_dialog, quirks=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        manifest = prepare("iemocap", release)
    manifest.write_csv(out / "cache" / "demo_manifest.csv")
    echo(
        f"manifest: {len(manifest)} utterances, "
        + ", ".join(f"{k} {v}" for k, v in manifest.counts("emotion").items())
        + "; "
        + ", ".join(f"{k} {v}" for k, v in manifest.counts("expression").items())
    )
    model_dir = out / "models" / "tiny-random-wav2vec2"
    if not (model_dir / "config.json").is_file():
        save_random_ssl_model(model_dir, kind="wav2vec2", size="tiny")
    stores = {
        "mfcc": (out / "cache" / "demo_mfcc.zarr", {}, "float32"),
        "w2v2": (out / "cache" / "demo_w2v2.h5", {"model": str(model_dir), "layers": "last"}, "float16"),
    }
    summary: dict[str, Any] = {"stores": {}, "runs": {}}
    for feature, (store, options, dtype) in stores.items():
        report = extract_to_store(
            manifest,
            build_extractor(feature, device="cpu", **options),
            store,
            dtype=dtype,
            batch_seconds=60.0,
            progress=progress,
        )
        verified = verify_store(store).ok
        speed = f"{report.realtime_factor:.0f}x real time" if report.stored else "already extracted"
        echo(f"{feature}: {store} ({speed}), verify {'ok' if verified else 'FAILED'}")
        summary["stores"][feature] = {"path": str(store), "verified": verified}
    run_dirs = []
    for feature, (store, _, _) in stores.items():
        for method, aux in (("nomtl", "none"), ("mtl", "expression")):
            run_dir = out / "runs" / f"{feature}-{method}"
            results = run_cv(
                store,
                run_dir,
                TrainConfig.from_dict({**read_config_file(DEMO_PRESET).train, "device": "cpu", "aux": aux}),
                Protocol("loso", by="session"),
                progress=progress,
            )
            era = f", ERA {results['aux_accuracy']:.1f}" if results.get("aux_accuracy") is not None else ""
            echo(
                f"{feature} {method}: WA {results['wa']:.1f}, UWA {results['uwa']:.1f}{era} (%, 5-fold leave-one-session-out)"
            )
            summary["runs"][f"{feature}-{method}"] = {
                "wa": results["wa"],
                "uwa": results["uwa"],
                "aux_accuracy": results.get("aux_accuracy"),
                "run_dir": str(run_dir),
            }
            run_dirs.append(run_dir)
    report_path = write_report(run_dirs, out / "report")
    write_text(report_path, f"{report_path.read_text()}\n## About this demo\n\n{NOTE}\n")
    summary["report"] = str(report_path)
    write_json(out / "demo.json", summary)
    failed = [feature for feature, store in summary["stores"].items() if not store["verified"]]
    if failed:
        raise StoreError(f"demo stores failed verification ({', '.join(failed)}); see {out / 'demo.json'}")
    return summary
