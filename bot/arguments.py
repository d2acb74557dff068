"""Argument types and the sub-command maker shared by the command line's sub-commands."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any


def positive_number(text: str) -> float:
    """An argparse ``type``: a number above 0, or a usage error naming the problem."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def port_number(text: str) -> int:
    """An argparse ``type``: a TCP port, 0 to 65535 (0: any free port)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port: 0 to 65535")
    return value


def add_command(
    sub: Any,
    name: str,
    summary: str,
    *,
    details: str = "",
    examples: Sequence[str] = (),
) -> argparse.ArgumentParser:
    """A subcommand of ``sub`` (what ``add_subparsers`` returned) whose ``--help`` says what
    it does (``summary``, then ``details`` as written) and ends with ``examples``; the summary
    is also its line in the parent's ``--help``."""
    description = summary[:1].upper() + summary[1:] + ("" if summary.endswith(".") else ".")
    if details:
        description += "\n\n" + details.strip("\n")
    epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples) if examples else None
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=summary,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser
