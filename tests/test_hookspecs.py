"""The hook specifications: every hook has a typed signature, an example that runs, and a line in the
README's plugin guide (a hook missing from the guide fails here)."""

from __future__ import annotations

import doctest
import inspect
import re
from pathlib import Path

import pytest

from referee.plugins import hookspecs

ROOT = Path(__file__).resolve().parents[1]
HOOKS = sorted(n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("referee_"))


def plugin_guide() -> str:
    """The README's "Writing a plugin" section."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("## Writing a plugin")
    end = readme.find("\n## ", start + 1)
    return readme[start:end if end != -1 else None]


def test_the_hooks_are_all_there():
    assert {"referee_scorers", "referee_backends", "referee_cost_trackers", "referee_submission_kinds",
            "referee_config_sections", "referee_derive_competition", "referee_dispatch_check",
            "referee_job_started", "referee_job_finished", "referee_leaderboard_columns",
            "referee_leaderboard_plots", "referee_submission_panels", "referee_leaderboard_renderers"} <= set(HOOKS)


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_typed(name):
    sig = inspect.signature(getattr(hookspecs, name))
    assert sig.return_annotation is not inspect.Signature.empty, f"{name} has no return type"
    for p in sig.parameters.values():
        assert p.annotation is not inspect.Parameter.empty and "Any" not in str(p.annotation), (name, p.name)


def test_one_meaning_per_argument_name():
    """An argument name has the same type in every hook (``job`` is always a JobRecord, ...)."""
    seen: dict[str, tuple[str, str]] = {}
    for name in HOOKS:
        for p in inspect.signature(getattr(hookspecs, name)).parameters.values():
            first = seen.setdefault(p.name, (name, str(p.annotation)))
            assert first[1] == str(p.annotation), f"{p.name!r} is {first[1]} in {first[0]} but {p.annotation} in {name}"


@pytest.mark.parametrize("name", HOOKS)
def test_hook_example_runs(name):
    doc = getattr(hookspecs, name).__doc__ or ""
    assert ">>> " in doc, f"{name} has no runnable example in its docstring"
    finder = doctest.DocTestFinder(recurse=False)
    (test,) = finder.find(getattr(hookspecs, name), name, globs={})
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    out: list[str] = []
    result = runner.run(test, out=out.append)
    assert result.attempted > 0
    assert result.failed == 0, "".join(out)


@pytest.mark.parametrize("name", HOOKS)
def test_hook_in_the_readme_plugin_guide(name):
    assert re.search(rf"`{name}\(", plugin_guide()), f"{name} is missing from README.md's plugin guide"


def test_guide_names_no_hook_that_does_not_exist():
    named = set(re.findall(r"`(referee_[a-z_]+)\(", plugin_guide()))
    assert named <= set(HOOKS), named - set(HOOKS)
