"""Totals for paged lists: :class:`engine.storage.totals.Totals` (a count is a statement, so it
lives in storage); its old import path, kept while callers move."""

from engine.storage.totals import EXACT_UPTO, Totals

__all__ = ["EXACT_UPTO", "Totals"]
