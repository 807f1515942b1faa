"""Exporting a trained model for serving without sermtl: TorchScript or ONNX.

The exported graph maps **features** to outputs, as the network sees them:
``features (B, T, F)`` float32 (``(B, L, T, F)`` for ``--layer weighted``), frames padded
at the end, and ``lengths (B,)`` int64 valid frames, to ``emotion_probs (B, K)``,
``embedding (B, D)`` and, with an auxiliary task, ``aux_probs (B, A)``. The features are
those of the store the model was trained on; ``FILE.json`` beside the export records how
to compute them (the store's feature config, dtype and layer), the class names, and whether
inputs must be speaker-normalised first, and ``FILE.md`` is the model card. The input
normalisation of the training set is inside the graph. A test checks the export against
the eager model on a batch of utterances of different lengths.

A seed ensemble's model folder (``train --all-data --repeats N``) exports as one graph
(:class:`EnsembleGraph`) with the same inputs and outputs: ``emotion_probs`` and
``aux_probs`` the mean of the N networks' probabilities (as
:class:`trainer.predict.Predictor` averages them), ``embedding`` the N networks'
embeddings side by side, ``(B, N·D)`` in seed order (as ``Predictor.embed`` gives them);
``FILE.json`` adds an ``ensemble`` entry saying so. A run directory's folds are not one
model and are refused.

An export never clobbers: before anything is written, it refuses (one line naming the file)
when ``FILE``, ``FILE.json`` or ``FILE.md`` would replace an existing file that is not a
previous export's own output, or when ``FILE`` is the input checkpoint. A previous export is
recognised by the ``"written_by": "sermtl export"`` key of its ``FILE.json``
(:data:`EXPORT_MARKER`), so exporting again to the same ``FILE`` replaces it.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import stat
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from featurestore.atomic import atomic_write, write_json, write_text
from featurestore.errors import ConfigError, ModelError, SermtlError, describe_error
from featurestore.features.fusion import feature_name
from featurestore.options import check_value
from featurestore.textfile import parse_json, read_text_file
from trainer.checkpoint import load_checkpoint
from trainer.loop import load_network
from trainer.model_options import ExportOptions, ModelSource
from trainer.network import SERNetwork
from trainer.predict import checkpoint_paths, seed_members

#: The ``written_by`` value of an export's ``FILE.json``: what a later export may replace.
EXPORT_MARKER = "sermtl export"
#: The largest ``FILE.json`` read to look for the marker (an export's is a few KiB).
_MAX_INTERFACE_BYTES = 2**20


class InferenceGraph(nn.Module):
    """The network's inference outputs as a tuple of tensors (what an exporter can trace)."""

    def __init__(self, network: SERNetwork) -> None:
        super().__init__()
        self.network = network.eval()

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.network(features, lengths)
        outputs = (torch.softmax(out["emotion_logits"], dim=-1), out["embedding"])
        if "aux_logits" in out:
            outputs = outputs + (torch.softmax(out["aux_logits"], dim=-1),)
        return outputs


class EnsembleGraph(nn.Module):
    """Several networks' :class:`InferenceGraph` outputs as one: the mean of their emotion
    (and auxiliary) probabilities and their embeddings concatenated, in member order."""

    def __init__(self, networks: Sequence[SERNetwork]) -> None:
        super().__init__()
        self.members = nn.ModuleList(InferenceGraph(network) for network in networks)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = [member(features, lengths) for member in self.members]
        emotion = torch.stack([out[0] for out in outputs]).mean(dim=0)
        embedding = torch.cat([out[1] for out in outputs], dim=-1)
        if len(outputs[0]) > 2:
            return emotion, embedding, torch.stack([out[2] for out in outputs]).mean(dim=0)
        return emotion, embedding


#: What the members of an ensemble must share to be one graph (the checkpoint's entries,
#: and the network's input sizes and normalisation).
_SHARED = ("feature", "emotions", "aux", "layer", "label", "store_dtype")


def check_members(checkpoints: Sequence[dict[str, Any]], paths: Sequence[Path]) -> None:
    """One line naming two members of an ensemble that differ in what its graph shares
    (:data:`_SHARED`, the network's input size, layers and normalisation)."""

    def inputs(checkpoint: dict[str, Any]) -> tuple[Any, ...]:
        network = checkpoint["network"]
        options = network.get("options") or network
        sizes = network["input_size"], network.get("input_layers", 1), network.get("utterance_size") or 0
        return (*sizes, options.get("input_norm"))

    for path, other in zip(paths[1:], checkpoints[1:]):
        differs = [key for key in _SHARED if other.get(key) != checkpoints[0].get(key)]
        differs += ["network inputs"] if inputs(other) != inputs(checkpoints[0]) else []
        if differs:
            raise ModelError(f"{path} and {paths[0]} differ in {differs[0]}: they are not members of one ensemble")


def output_names(checkpoint: dict[str, Any]) -> list[str]:
    return ["emotion_probs", "embedding"] + (["aux_probs"] if checkpoint.get("aux") else [])


def example_inputs(network: SERNetwork, frames: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of two utterances (``frames`` and ``frames // 2`` valid frames)."""
    config = network.config
    shape = (
        (2, config.input_layers, frames, config.input_size)
        if config.input_layers > 1
        else (2, frames, config.input_size)
    )
    generator = torch.Generator().manual_seed(0)
    return torch.randn(shape, generator=generator), torch.tensor([frames, frames // 2])


def export_model(checkpoint_path: str | Path | Sequence[str | Path], out: str | Path, format: str = "onnx") -> Path:
    """Export the model of ``checkpoint_path`` to ``out`` (``format``: torchscript or onnx),
    with ``out.json`` (how to feed it) and ``out.md`` (the model card) beside it; given a
    list of checkpoints (a seed ensemble's members), one :class:`EnsembleGraph` of them."""
    check_value(ExportOptions, "format", format)
    single = isinstance(checkpoint_path, (str, os.PathLike))
    paths = [Path(checkpoint_path)] if single else [Path(p) for p in checkpoint_path]
    checkpoints = [load_checkpoint(path) for path in paths]
    check_members(checkpoints, paths)
    checkpoint = checkpoints[0]
    out = Path(out)
    for path in paths:
        check_outputs(out, path)
    networks = [load_network(c, "cpu") for c in checkpoints]
    graph = InferenceGraph(networks[0]) if len(networks) == 1 else EnsembleGraph(networks)
    inputs = example_inputs(networks[0])
    name = str(paths[0]) if len(paths) == 1 else f"the {len(paths)} members of {paths[0].parent.parent}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot make its folder ({describe_error(exc)})") from None
    try:
        with warnings.catch_warnings(), _quiet_loggers("torch.onnx", "torch.export", "torch._dynamo"):
            warnings.simplefilter("ignore")  # tracer and exporter chatter about shapes the graph handles
            data = (
                _torchscript(graph, inputs)
                if format == "torchscript"
                else _onnx(graph, inputs, output_names(checkpoint))
            )
    except SermtlError:
        raise
    except Exception as exc:  # exporters raise many types
        raise ModelError(f"cannot export {name} as {format} ({describe_error(exc)})") from None
    with atomic_write(out, "wb") as handle:
        handle.write(data)
    description = interface(checkpoint, format)
    if len(checkpoints) > 1:
        description["ensemble"] = ensemble_interface(checkpoints)
    write_json(_side_file(out, ".json"), description)
    write_text(_side_file(out, ".md"), export_card(checkpoint, out, format, members=len(checkpoints)))
    return out


def export_checkpoint(source: ModelSource, options: ExportOptions) -> Path:
    """``sermtl export``: the one model of ``source`` (a fold's ``checkpoint.pt`` or a model
    folder, a seed ensemble's as one graph; a run directory of several folds is refused)
    exported as ``options`` say."""
    paths = checkpoint_paths(source.checkpoint)
    if len(paths) > 1 and seed_members(Path(source.checkpoint)) == paths:
        return export_model(paths, options.out, options.format)
    if len(paths) > 1:
        raise ConfigError(
            f"--checkpoint {source.checkpoint}: a run directory holds {len(paths)} folds; export one fold's "
            "checkpoint.pt, or a model of train --all-data"
        )
    return export_model(paths[0], options.out, options.format)


def describe_export(path: Path, format: str) -> str:
    """The line ``sermtl export`` prints: the file, its format and size, its side files."""
    return f"{path} ({format}, {path.stat().st_size / 2**20:.1f} MiB); {path.name}.json, {path.name}.md"


def _side_file(out: Path, suffix: str) -> Path:
    return out.with_name(out.name + suffix)


def _previous_export(out: Path) -> bool:
    """Whether ``out.json`` is the description an earlier export wrote (its marker)."""
    try:
        data = parse_json(read_text_file(_side_file(out, ".json"), str(out), _MAX_INTERFACE_BYTES), str(out))
    except SermtlError:
        return False
    return isinstance(data, dict) and data.get("written_by") == EXPORT_MARKER


def check_outputs(out: Path, checkpoint_path: Path) -> None:
    """Refuse, in one line naming the file and before anything is written, an ``out`` that
    is the input checkpoint, or whose files (``out``, ``out.json``, ``out.md``) would replace
    anything but the regular files of a previous export."""
    previous = _previous_export(out)
    for target in (out, _side_file(out, ".json"), _side_file(out, ".md")):
        if not os.path.lexists(target):
            continue
        if os.path.exists(target) and os.path.samefile(target, checkpoint_path):
            raise ConfigError(f"--out {target} is the input checkpoint; export to another file (nothing written)")
        if not (previous and stat.S_ISREG(os.lstat(target).st_mode)):
            raise ConfigError(
                f"--out {out}: {target} already exists and was not written by an export; "
                "choose another --out (nothing written)"
            )


@contextlib.contextmanager
def _quiet_loggers(*names: str):
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _torchscript(graph: InferenceGraph, inputs: tuple[torch.Tensor, torch.Tensor]) -> bytes:
    with torch.no_grad():
        traced = torch.jit.trace(graph, inputs, check_trace=False)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    return buffer.getvalue()


def _onnx(graph: InferenceGraph, inputs: tuple[torch.Tensor, torch.Tensor], names: list[str]) -> bytes:
    try:
        import onnx  # noqa: F401  (the exporter needs it)
    except ImportError:
        raise SermtlError("ONNX export needs the onnx and onnxscript packages: pip install 'sermtl[export]'") from None
    batch, frames = torch.export.Dim("batch", min=1), torch.export.Dim("frames", min=2)
    feature_axes = {0: batch, 2: frames} if inputs[0].dim() == 4 else {0: batch, 1: frames}
    with torch.no_grad():
        program = torch.onnx.export(
            graph,
            inputs,
            dynamo=True,
            input_names=["features", "lengths"],
            output_names=names,
            dynamic_shapes=(feature_axes, {0: batch}),
            verbose=False,
        )
    return program.model_proto.SerializeToString()


def interface(checkpoint: dict[str, Any], format: str) -> dict[str, Any]:
    """What a caller of the export needs: inputs, outputs, classes and the features."""
    network = checkpoint["network"]
    options = network.get("options") or network
    return {
        "format": format,
        "sermtl_version": checkpoint.get("sermtl_version"),
        "inputs": {
            "features": "float32 (batch, frames, dim)"
            if network.get("input_layers", 1) == 1
            else "float32 (batch, layers, frames, dim)",
            "lengths": "int64 (batch,)",
        },
        "outputs": output_names(checkpoint),
        "emotions": checkpoint["emotions"],
        "aux": checkpoint.get("aux"),
        "feature": checkpoint["feature"],
        "store_dtype": checkpoint.get("store_dtype"),
        "layer": checkpoint.get("layer"),
        "speaker_normalised_inputs": options.get("input_norm") == "speaker",
        # a fusion with utterance-level stores: the last utterance_dims values of every frame are
        # the utterance's vector, repeated (featurestore/store/fusion.py)
        "utterance_dims": network.get("utterance_size") or 0,
        "written_by": EXPORT_MARKER,
    }


def ensemble_interface(checkpoints: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``FILE.json``'s ``ensemble`` entry: the members' seeds and how the outputs combine them."""
    return {
        "members": len(checkpoints),
        "seeds": [(c.get("train_config") or {}).get("seed") for c in checkpoints],
        "emotion_probs": "the mean of the members' probabilities (aux_probs too)",
        "embedding": f"the members' embeddings side by side, in seed order ({len(checkpoints)} x the embedding size)",
    }


def export_card(checkpoint: dict[str, Any], out: Path, format: str, members: int = 1) -> str:
    """A short model card for an exported model (the training card, when the checkpoint's
    folder has one, is the fuller one); ``members`` > 1: a seed ensemble's."""
    feature = checkpoint["feature"]
    lines = [
        "# Model card",
        "",
        f"`{out.name}`: a sermtl ECAPA-TDNN emotion classifier exported as {format}.",
        "",
        "## Use",
        "",
        f"Inputs and outputs: `{out.name}.json`. Features: `{feature_name(feature)}` computed as "
        "that file's `feature` entry says (sermtl's extractors compute exactly these), rounded to "
        f"`{checkpoint.get('store_dtype')}`.",
        f"Classes: {', '.join(checkpoint['emotions'])}."
        + (
            f" Auxiliary task `{checkpoint['aux']['column']}`: {', '.join(checkpoint['aux']['classes'])}."
            if checkpoint.get("aux")
            else ""
        ),
        "",
        "## Training",
        "",
        f"Fold {checkpoint.get('fold')} of a cross-validation run, best epoch {checkpoint.get('best_epoch')}"
        if checkpoint.get("fold")
        else "Trained on every row of its store."
        + (
            f" An ensemble of {members} networks trained alike with their own seeds: `emotion_probs` (and "
            "`aux_probs`) are the mean of theirs, `embedding` their embeddings side by side."
            if members > 1
            else ""
        ),
        "",
        "## Intended use and limits",
        "",
        "Research on speech emotion recognition. Not for decisions about people. Emotion corpora are small and "
        "narrow: expect lower accuracy on other speakers, languages, channels, and between acted and spontaneous "
        "speech.",
        "",
        "## Config",
        "",
        "```json",
        json.dumps(checkpoint.get("train_config"), indent=2, sort_keys=True),
        "```",
        "",
    ]
    return "\n".join(lines)
