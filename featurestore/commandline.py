"""The command line's machinery: click options generated from declarations
(:mod:`featurestore.options`), and the group that turns refusals into one line.

Every option of every ``sermtl`` command is a :class:`DeclaredOption` made by
:func:`click_options` from a field of a declaration (``TrainConfig``, ``Protocol``,
``ExtractOptions`` …): its flag, default, help and allowed values are written once, there.
Torch-free, so ``sermtl --help`` starts fast.
"""

from __future__ import annotations

import dataclasses
import sys
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import click
from click.core import ParameterSource

from featurestore.errors import SermtlError
from featurestore.options import Spec, check_field, declared, field_flag, kind, option


class NonEmptyPath(click.Path):
    """A path flag or argument that refuses an empty value (``--store ''`` would
    otherwise mean the default store, or the current folder)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value.strip():
            self.fail("an empty path; give a file or folder", param, ctx)
        return super().convert(value, param, ctx)


class DeclaredOption(click.Option):
    """A click option made from a declared field (``declaration``)."""

    def __init__(self, *args: Any, declaration: dataclasses.Field, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.declaration = declaration


def _click_type(field: dataclasses.Field, spec: Spec) -> click.ParamType:
    if spec.choices:
        return click.Choice(spec.choices)
    if spec.path:
        return NonEmptyPath(exists=spec.exists, file_okay=spec.path != "dir", dir_okay=spec.path != "file")
    plain, _ = kind(field)
    return {int: click.INT, float: click.FLOAT}.get(plain, click.STRING)


def _checked(field: dataclasses.Field, spec: Spec) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback checking a flag's value against its declaration as it is parsed: a
    bad value is refused before any work, as the library refuses it (a ``ConfigError``
    naming the flag: one line, exit code 1)."""

    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is not None and ctx.get_parameter_source(param.name) is not ParameterSource.DEFAULT:
            check_field(field, spec.parse(value) if spec.parse else value)
        return value

    return check


def click_option(field: dataclasses.Field, spec: Spec) -> Callable[[Any], Any]:
    """The click option of a declared field: flag, default, help and allowed values from the
    declaration alone, the value checked against it as it is parsed."""
    plain, _ = kind(field)
    allowed = spec.describe()
    names = [field_flag(field), *([spec.short] if spec.short else []), field.name]
    default = field.default if field.default is not dataclasses.MISSING else None
    return click.option(
        *names,
        cls=DeclaredOption,
        declaration=field,
        type=None if plain is bool else _click_type(field, spec),
        is_flag=plain is bool,
        multiple=plain is tuple,
        default=None if plain is tuple else default,
        required=spec.required,
        metavar=spec.metavar,
        show_default=spec.show_default,
        help=spec.help + (f" Allowed: {allowed}." if allowed and not spec.choices else ""),
        callback=_checked(field, spec),
    )


def click_options(owner: type, *names: str) -> list[Callable[[Any], Any]]:
    """The click options of ``owner``'s declared fields named ``names`` (all those with a
    flag when none is named), in declaration order."""
    fields = [(f, s) for f, s in declared(owner) if s.cli and (not names or f.name in names)]
    missing = set(names) - {f.name for f, _ in fields}
    if missing:
        raise ValueError(f"{owner.__name__} declares no option {sorted(missing)}")
    return [click_option(f, s) for f, s in fields]


def with_options(*groups: Iterable[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    """A decorator adding the options of ``groups`` to a command, in the order given."""
    options = [opt for group in groups for opt in group]

    def decorate(command: Any) -> Any:
        for opt in reversed(options):
            command = opt(command)
        return command

    return decorate


def given(params: dict[str, Any]) -> dict[str, Any]:
    """Those of the current command's ``params`` set on the command line or from the
    environment (not defaults): what overrides a config file."""
    ctx = click.get_current_context()
    typed = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    return {name: value for name, value in params.items() if ctx.get_parameter_source(name) in typed}


@dataclasses.dataclass(frozen=True)
class Output:
    """How a command prints (declared options shared by commands)."""

    quiet: bool = option(
        False,
        "No progress bars and no per-fold lines, only the results (TQDM_DISABLE=1 drops the bars only).",
        short="-q",
    )
    as_json: bool = option(False, "Print JSON instead of a table.", flag="--json")


def _echo_warning(message, category, filename, lineno, file=None, line=None) -> None:
    click.echo(f"warning: {message}", err=True)


class SermtlGroup(click.Group):
    """Turns :class:`SermtlError` into one line on stderr and exit code 1, a flag that does
    not parse into one line and exit code 2, Ctrl-C into 130,
    and warnings (e.g. a corpus's unlabelled files) into ``warning: …`` lines."""

    def invoke(self, ctx: click.Context) -> Any:
        warnings.showwarning = _echo_warning
        try:
            return super().invoke(ctx)
        except SermtlError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except click.UsageError as exc:  # a flag that does not parse: one line, not the usage block
            command = f"{exc.ctx.command_path}: " if exc.ctx is not None else ""
            click.echo(f"error: {command}{exc.format_message()}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted: finished work is kept; run the same command again to resume", err=True)
            sys.exit(130)
