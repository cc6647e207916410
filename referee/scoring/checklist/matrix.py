"""From per-test failure counts to the CheckList matrix (capability x test type), groups and columns.

Shared by the scorer's details, the leaderboard columns and the reports, so a number means the same
thing everywhere: a failure rate is failed test cases / test cases that ran and were not filtered out
(CheckList's own definition in ``AbstractTest.get_stats``).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from referee.scoring.checklist.schema import TEST_TYPES, capability_sort_key


def rate(fails: int, n: int) -> float | None:
    return fails / n if n else None


def cell(tests: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    tests = list(tests)
    fails = sum(int(t["fails"]) for t in tests)
    n = sum(int(t["n"]) for t in tests)
    return {"fails": fails, "n": n, "rate": rate(fails, n), "tests": [t["name"] for t in tests]}


def capabilities(tests: Iterable[Mapping[str, Any]]) -> list[str]:
    return sorted({t["capability"] for t in tests}, key=capability_sort_key)


def matrix(tests: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``{"capabilities", "types", "cells": {capability: {type: cell or None}}, "overall", "by_capability",
    "by_type"}`` — the CheckList matrix with row, column and overall totals."""
    caps = capabilities(tests)
    cells = {c: {ty: (cell(t for t in tests if t["capability"] == c and t["type"] == ty)
                      if any(t["capability"] == c and t["type"] == ty for t in tests) else None)
                 for ty in TEST_TYPES} for c in caps}
    return {
        "capabilities": caps,
        "types": list(TEST_TYPES),
        "cells": cells,
        "by_capability": {c: cell(t for t in tests if t["capability"] == c) for c in caps},
        "by_type": {ty: cell(t for t in tests if t["type"] == ty) for ty in TEST_TYPES
                    if any(t["type"] == ty for t in tests)},
        "overall": cell(tests),
    }


def select(tests: Sequence[Mapping[str, Any]], column: str) -> list[Mapping[str, Any]]:
    """Tests a column name stands for: ``overall``, a test type, ``Capability/TYPE``, a capability or a
    test name (checked in that order)."""
    if column == "overall":
        return list(tests)
    if column in TEST_TYPES:
        return [t for t in tests if t["type"] == column]
    if "/" in column:
        cap, _, ty = column.rpartition("/")
        if ty in TEST_TYPES:
            found = [t for t in tests if t["capability"] == cap and t["type"] == ty]
            if found:
                return found
    found = [t for t in tests if t["capability"] == column]
    return found or [t for t in tests if t["name"] == column]


def column_value(tests: Sequence[Mapping[str, Any]], column: str) -> float | None:
    chosen = select(tests, column)
    return cell(chosen)["rate"] if chosen else None


def column_label(column: str) -> str:
    return f"fail:{column}"


def default_columns(tests: Sequence[Mapping[str, Any]]) -> list[str]:
    return ["overall", *capabilities(tests)]
