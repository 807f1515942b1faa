"""The hostile-case harness shared by every category file of ``tests/hostile``.

A :class:`Case` runs one command as a careless user or an attacker would. A refused case
exits with its code (1 for a refused value or file, 2 for a flag that does not parse),
prints exactly one ``error:`` line naming the culprit and no traceback. Every case then
checks that nothing was lost: every store the case touched passes ``verify``, and no
temporary file is left behind; ``after`` checks the rest (files of the user's unchanged,
nothing written). ``max_rss_mib`` runs the command in a child process instead and bounds
its peak memory (cases about size).
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from cli import main
from featurestore.verify import verify_store
from tests.hostile.conftest import Workspace

Argv = list[Any]
REPO = Path(__file__).resolve().parents[2]


@dataclasses.dataclass
class Case:
    """One hostile command: ``argv(ws)`` builds the command (planting whatever it needs),
    ``code`` is the expected exit code, ``culprit`` a text the error line must hold
    (a callable gets the workspace), ``after(ws)`` checks more, ``verify`` whether the
    stores the case made must pass ``sermtl verify`` afterwards, ``max_rss_mib`` a bound
    on the command's peak memory (the command then runs as its own process)."""

    category: str
    name: str
    argv: Callable[[Workspace], Argv]
    code: int = 1
    culprit: str | Callable[[Workspace], str] = ""
    after: Callable[[Workspace], None] | None = None
    verify: bool = True
    max_rss_mib: int | None = None


@dataclasses.dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None = None

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def invoke(argv: Argv) -> Outcome:
    result = CliRunner().invoke(main, [str(a) for a in argv])
    return Outcome(result.exit_code, result.stdout, result.stderr, result.exception)


#: The child of :func:`invoke_measured`: the CLI, then its own peak RSS (KiB) as the last stderr
#: line. The peak is the memory map's high-water mark (``VmHWM``): ``ru_maxrss`` would carry
#: the forking parent's size across ``exec`` (the pytest process, often a GiB).
_MEASURED = """
import re, sys
sys.argv = ["sermtl", *sys.argv[1:]]
from cli import main
try:
    main()
finally:
    with open("/proc/self/status") as status:
        peak = re.search(r"VmHWM:\\s+(\\d+) kB", status.read()).group(1)
    sys.stderr.write("\\nRSS %s\\n" % peak)
"""


def invoke_measured(argv: Argv, cwd: Path, timeout: float = 120) -> tuple[Outcome, float]:
    """``argv`` run by the CLI in a child process; its outcome and peak RSS in MiB."""
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURED, *map(str, argv)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    match = re.search(r"\nRSS (\d+)\n$", proc.stderr)
    stderr = proc.stderr[: match.start()] if match else proc.stderr
    return Outcome(proc.returncode, proc.stdout, stderr), (int(match.group(1)) / 1024 if match else float("inf"))


def without_progress_bars(text: str) -> str:
    """``text`` without tqdm's bars (redrawn with carriage returns and cursor moves on stderr)."""
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)
    return re.sub(r"[^\n\r]*\|[^\n\r]*\[\d\d:\d\d[^\n\r]*\]\r?", "", text)


def check_case(case: Case, ws: Workspace) -> None:
    """Run ``case`` in ``ws`` and check everything the module docstring promises."""
    argv = case.argv(ws)
    planted = set(ws.tmp.rglob("*.tmp"))
    try:
        if case.max_rss_mib is None:
            result = invoke(argv)
        else:
            result, peak = invoke_measured(argv, ws.tmp)
            assert peak <= case.max_rss_mib, f"peak memory {peak:.0f} MiB > {case.max_rss_mib} MiB: {result.output}"
    finally:
        if ws.lock is not None:
            ws.lock.release()
    output = result.output
    assert "Traceback" not in output, output
    assert result.exit_code == case.code, f"exit {result.exit_code}: {output}\n{result.exception!r}"
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    if case.code != 0:
        lines = [
            line
            for line in without_progress_bars(result.stderr).splitlines()
            if line.strip() and not line.startswith("warning:")
        ]
        assert len(lines) == 1 and lines[0].startswith("error: "), output
        assert len(lines[0]) < 1000, f"error line of {len(lines[0])} characters"
        culprit = case.culprit(ws) if callable(case.culprit) else case.culprit
        assert culprit in lines[0], f"{culprit!r} not named in: {lines[0]}"
    if case.after is not None:
        case.after(ws)
    if case.verify:  # damage, not rows a refused extract left to do ("missing"), fails a case
        for store in ws.made.values():
            if store.suffix in (".zarr", ".h5"):
                assert verify_store(store).problems == [], f"{store} damaged"
    left = set(ws.tmp.rglob("*.tmp")) - planted
    assert not left, f"temporary files left behind: {left}"


def case_ids(cases: list[Case]) -> list[str]:
    return [f"{c.category}: {c.name}" for c in cases]
