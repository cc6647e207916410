"""Shared, built-once state for the CheckList and report tests (not a test module).

Building the sentiment example (its generator builds the CheckList suite in a subprocess) and scoring
its two sample submissions takes a while on a loaded machine, so every test module that needs it
gets the same copy, built on first use in the session's temporary directory.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from conftest import prepare_example

from referee.plugins.manager import (
    PluginManager,
    get_plugin_manager,
    set_plugin_manager,
)

_lock = threading.Lock()
_built: "ScoredExample | None" = None


@dataclass
class ScoredExample:
    directory: Path  # the generated example (competition.yaml, data/, submissions/, code/)
    workspace: Path  # a store with the competition loaded and alpha (lexicon), bravo (better) scored
    competition_id: str
    lexicon_id: int
    better_id: int


def scored_example(tmp_path_factory) -> ScoredExample:
    """The sentiment example with its two good sample submissions scored (built once per session)."""
    global _built
    with _lock:
        if _built is None:
            _built = _build(tmp_path_factory.mktemp("sentiment"))
        return _built


def _build(root: Path) -> ScoredExample:
    from referee.platform.controller.competitions import load_into_store
    from referee.platform.controller.reconcile import Controller
    from referee.platform.store import Store
    from referee.submissions.submit import submit

    previous = get_plugin_manager()
    set_plugin_manager(PluginManager(entrypoints=False))
    try:
        ex = prepare_example("sentiment", root)
        store = Store(root / "ws")
        comp = load_into_store(store, ex / "competition.yaml")
        lexicon = submit(store, comp, "alpha", ex / "submissions" / "alpha__lexicon.csv")
        better = submit(store, comp, "bravo", ex / "submissions" / "bravo__better.csv")
        summary = Controller(store, comp, poll_interval=0.05).run()
        assert summary.scored == 2, summary.to_dict()
        store.close()
        return ScoredExample(ex, root / "ws", comp.id, lexicon, better)
    finally:
        set_plugin_manager(previous)
