"""The demo job: a generated corpus, through prepare and extract, into verified stores.

Runs with no corpus, GPU or network: it writes a small synthetic corpus in the IEMOCAP
layout (:func:`featurestore.synthetic.make_iemocap`: 5 sessions, 10 speakers, four
emotions, scripted = acted and improvised = spontaneous dialogs that differ audibly),
prepares its manifest with the real IEMOCAP recipe, extracts MFCC into a Zarr store and
the hidden states of a tiny randomly initialised wav2vec2 (built on the spot: the real
``facebook/wav2vec2-large-960h`` needs a download) into an HDF5 store, and verifies both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from featurestore.corpora import prepare
from featurestore.features import build_extractor
from featurestore.features.random_models import save_random_ssl_model
from featurestore.pipeline import extract_to_store
from featurestore.synthetic import make_iemocap
from featurestore.verify import store_summary, verify_store


def run_demo(out: str | Path, utts_per_dialog: int = 16, progress: bool = True,
             echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the demo under ``out`` and return a summary (also written to ``out/demo.json``).

    Re-running reuses the corpus, model and stores already there.
    """
    out = Path(out)
    corpus_dir = out / "corpus"
    release = corpus_dir / "IEMOCAP_full_release"
    if not release.is_dir():
        echo(f"writing a synthetic IEMOCAP-layout corpus to {corpus_dir}")
        make_iemocap(corpus_dir, utts_per_dialog=utts_per_dialog, quirks=False)
    manifest = prepare("iemocap", release)
    manifest_path = manifest.write_csv(out / "cache" / "demo_manifest.csv")
    echo(f"manifest {manifest_path}: {len(manifest)} utterances, "
         + ", ".join(f"{k} {v}" for k, v in manifest.counts("emotion").items()))
    model_dir = out / "models" / "tiny-random-wav2vec2"
    if not (model_dir / "config.json").is_file():
        save_random_ssl_model(model_dir, kind="wav2vec2", size="tiny")
    jobs = [
        ("mfcc", {}, out / "cache" / "demo_mfcc.zarr", "float32"),
        ("w2v2", {"model": str(model_dir), "layers": "all"}, out / "cache" / "demo_w2v2.h5", "float16"),
    ]
    summary: dict[str, Any] = {"manifest": str(manifest_path), "stores": {}}
    for feature, options, store, dtype in jobs:
        extractor = build_extractor(feature, device="auto", **options)
        report = extract_to_store(manifest, extractor, store, dtype=dtype, batch_seconds=60.0, progress=progress)
        result = verify_store(store)
        info = store_summary(store)
        speed = f"{report.realtime_factor:.0f}x real time" if report.stored else "already extracted"
        echo(f"{feature}: {store} ({info['format']}), {info['utterances']} utterances, "
             f"{info['layers']} layer(s) x {info['dim']} dims, {speed}, verify {'ok' if result.ok else 'FAILED'}")
        summary["stores"][feature] = {
            "path": str(store), "utterances": info["utterances"], "layers": info["layers"], "dim": info["dim"],
            "realtime_factor": round(report.realtime_factor, 1), "verified": result.ok,
            "size_bytes": info["size_bytes"],
        }
    (out / "demo.json").write_text(json.dumps(summary, indent=2))
    return summary
