"""Quoting for the few names and values that must be spelled inside DuckDB SQL (values that can be
bound as parameters are bound instead)."""

from __future__ import annotations


def literal(text: str) -> str:
    """A SQL string literal of `text`."""
    return "'" + text.replace("'", "''") + "'"


def identifier(name: str) -> str:
    """A quoted SQL identifier of `name` (a column name from a file, for example)."""
    return '"' + name.replace('"', '""') + '"'
