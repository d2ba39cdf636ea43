"""Searching by name: patterns for LIKE and ILIKE."""

from __future__ import annotations


def like_pattern(search: str) -> str:
    """`%search%` for LIKE/ILIKE, its wildcards (and the escape character) taken literally.

    `persons.name` and `gifts.name` have trigram GIN indexes (migration 0003) where the
    server ships pg_trgm, which serve this ILIKE; without them it scans the family's rows."""
    escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
