"""Every choice list the command line offers comes from a library constant or registry, and
the command line builds them without importing torch (so ``sermtl --help`` starts fast)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

#: In a fresh interpreter: import the CLI, record whether torch came with it, and every
#: click.Choice of every command, as {"command flag": [choices]}.
_CHOICES = """
import json, sys
import click
from cli import main
choices = {}
for name, command in main.commands.items():
    for param in command.params:
        if isinstance(param.type, click.Choice):
            choices[f"{name} {param.opts[0]}"] = list(param.type.choices)
print(json.dumps({"torch": "torch" in sys.modules, "choices": choices}))
"""


def _cli_choices() -> dict:
    done = subprocess.run([sys.executable, "-c", _CHOICES], cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_the_choice_lists_come_from_the_library_without_torch() -> None:
    from featurestore.corpora import available_corpora
    from featurestore.extract_options import ON_ERROR_CHOICES
    from featurestore.features import FEATURES
    from featurestore.store.base import STORE_DTYPES, available_backends
    from trainer.baseline import FUNCTIONALS, INPUT_NORMS
    from trainer.config import options
    from trainer.folds import PROTOCOLS
    from trainer.paper import EXPERIMENTS

    found = _cli_choices()
    assert found["torch"] is False
    expected = {
        "prepare": {"--corpus": available_corpora()},
        "extract": {
            "--corpus": available_corpora(),
            "--feature": FEATURES.names(),
            "--format": available_backends(),
            "--dtype": list(STORE_DTYPES),
            "--on-error": list(ON_ERROR_CHOICES),
        },
        "experiment": {"name": EXPERIMENTS.names(), "--feature": FEATURES.names()},
        "baseline": {
            "--functionals": list(FUNCTIONALS),
            "--input-norm": list(INPUT_NORMS),
            "--protocol": list(PROTOCOLS),
        },
        "cv": {"--protocol": list(PROTOCOLS)},
    }
    for command, flags in expected.items():
        for flag, choices in flags.items():
            assert found["choices"][f"{command} {flag}"] == choices, (command, flag)
    for field, spec in options():  # the training options' choices come from their declarations
        if spec.choices:
            assert found["choices"][f"cv --{field.name.replace('_', '-')}"] == list(spec.choices)
    from trainer.model_options import EXPORT_FORMATS

    assert found["choices"]["export --format"] == list(EXPORT_FORMATS)
