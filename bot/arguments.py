"""Argument types shared by the command line's sub-commands."""

from __future__ import annotations

import argparse


def positive_number(text: str) -> float:
    """An argparse ``type``: a number above 0, or a usage error naming the problem."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value
