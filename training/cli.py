"""One command-line vocabulary for every ``python -m training.<command>``.

Every command parses a dataclass with ``HfArgumentParser`` through ``parse``, which adds what they
all share: the example from the module's docstring under ``--help``, one-line warnings for the
spellings earlier versions used (so users' scripts keep working), and choices checked before any
work starts (argparse names the bad value and the allowed ones).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import takewhile
from pathlib import Path
from typing import TypeVar

from .errors import UserError

T = TypeVar("T")
TRUE_FALSE = {"true", "false", "yes", "no", "1", "0", "t", "f", "y", "n"}


@dataclass(frozen=True)
class Renamed:
    """``--old VALUE`` is now ``--new VALUE``."""

    old: str
    new: str

    @property
    def message(self) -> str:
        return f"--{self.old} is deprecated: use --{self.new}"

    def rewrite(self, argv: list[str], i: int) -> list[str]:
        flag, eq, value = argv[i].partition("=")
        return [f"--{self.new}" + (eq + value if eq else "")]


@dataclass(frozen=True)
class RepoIdFlag:
    """``--push_to_hub ID`` is now ``--push_to_hub --<repo>_id ID``; ``--push_to_hub`` alone is a switch."""

    old: str
    new: str  # the repo-id field

    @property
    def message(self) -> str:
        return f"--{self.old} ID is deprecated: use --{self.old} --{self.new} ID"

    def rewrite(self, argv: list[str], i: int) -> list[str] | None:
        value, inline = _flag_value(argv, i)
        if not value or value.startswith("-") or value.lower() in TRUE_FALSE:
            return None  # the current meaning: a switch
        return _consume(argv, i, inline, [f"--{self.old}", f"--{self.new}", value])


@dataclass(frozen=True)
class SeedCount:
    """``--seeds N`` (one number: a count) is now ``--seeds 0 1 ... N-1`` (the seeds themselves)."""

    old: str

    @property
    def message(self) -> str:
        return f"--{self.old} N (a count) is deprecated: give the seeds themselves, e.g. --{self.old} 0 1 2"

    def rewrite(self, argv: list[str], i: int) -> list[str] | None:
        value, inline = _flag_value(argv, i)
        if not inline and len(list(takewhile(lambda a: not a.startswith("--"), argv[i + 1:]))) != 1:
            return None  # several values: today's list of seeds
        if not value.isdigit():
            return None
        return _consume(argv, i, inline, [f"--{self.old}", *map(str, range(int(value)))])


@dataclass(frozen=True)
class CommaList:
    """``--name a,b`` is now ``--name a b``."""

    old: str

    @property
    def message(self) -> str:
        return f"--{self.old} a,b is deprecated: use --{self.old} a b"

    def rewrite(self, argv: list[str], i: int) -> list[str] | None:
        value, inline = _flag_value(argv, i)
        if "," not in value:
            return None
        return _consume(argv, i, inline, [f"--{self.old}", *[v for v in value.split(",") if v]])


def _flag_value(argv: list[str], i: int) -> tuple[str, bool]:
    """The value of the flag at ``argv[i]`` (``--flag=value`` or ``--flag value``), and whether it was inline."""
    _, eq, value = argv[i].partition("=")
    return (value, True) if eq else (argv[i + 1] if i + 1 < len(argv) else "", False)


def _consume(argv: list[str], i: int, inline: bool, replacement: list[str]) -> list[str]:
    """``replacement`` for the flag at ``argv[i]``, dropping its separate value from ``argv``."""
    if not inline:
        del argv[i + 1]
    return replacement


def rewrite_deprecated(argv: Sequence[str], deprecated: Sequence) -> list[str]:
    """Today's spelling of ``argv``, with a one-line warning per old spelling found."""
    argv, out, i = list(argv), [], 0
    by_flag = {f"--{d.old}": d for d in deprecated}
    while i < len(argv):
        alias = by_flag.get(argv[i].partition("=")[0])
        new = alias.rewrite(argv, i) if alias else None
        if new is None:
            out.append(argv[i])
        else:
            warnings.warn(alias.message, FutureWarning, stacklevel=3)
            out += new
        i += 1
    return out


def read_argument_files(argv: Sequence[str]) -> list[str]:
    """``@path`` naming an existing file becomes the file's lines, one argument each (as argparse's
    ``fromfile_prefix_chars``, but a value such as a BibTeX ``@misc{...}`` is left alone)."""
    out = []
    for arg in argv:
        path = Path(arg[1:]) if arg.startswith("@") else None
        if path is not None and path.is_file():
            out += [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        else:
            out.append(arg)
    return out


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def parse(arguments: type[T], doc: str | None, argv: Sequence[str] | None = None,
          deprecated: Sequence = (), positional: tuple[str, str] | None = None) -> T:
    """Parse ``argv`` (default: the command line) into ``arguments``; ``doc`` (the module docstring, with
    its example) heads ``--help``. ``positional`` = (field, help) takes one or more positional values."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(arguments, description=doc, formatter_class=_Formatter)
    if positional:
        parser.add_argument(positional[0], nargs="+", help=positional[1])
    argv = rewrite_deprecated(read_argument_files(sys.argv[1:] if argv is None else argv), deprecated)
    *parsed, unknown = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if unknown:
        raise UserError(unknown_message(unknown, flags_of(parser)))
    if positional:
        setattr(parsed[0], positional[0], getattr(parsed[1], positional[0]))
    return parsed[0]


def flags_of(*parsers: argparse.ArgumentParser) -> list[str]:
    """Every ``--flag`` the parsers take."""
    return sorted({o for parser in parsers for action in parser._actions for o in action.option_strings
                   if o.startswith("--")})


def unknown_message(unknown: Sequence[str], known: Sequence[str]) -> str:
    """One line naming the first unknown argument and, for a flag, the closest of the ``known`` flags."""
    import difflib

    first = unknown[0]
    if not first.startswith("-"):
        return f"unexpected argument {first!r} (every value follows its flag; see --help)"
    flag = first.split("=", 1)[0]
    close = difflib.get_close_matches(flag, known, n=1, cutoff=0.6)
    return f"unknown flag {flag}" + (f": did you mean {close[0]}?" if close else " (see --help)")


def check_choice(name: str, value: object, allowed: Sequence[object]) -> None:
    """For arguments built in code (the parser checks the command line): one line naming both."""
    if value not in allowed:
        raise UserError(f"--{name}: {value!r} is not one of {', '.join(map(str, allowed))}")


def require(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)


def run(main: Callable[[], object]) -> None:
    """Show deprecation warnings as one line each, then run ``main`` (errors.run_cli)."""
    from .errors import run_cli

    def one_line(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {message}", file=sys.stderr)

    warnings.showwarning = one_line
    run_cli(main)
