"""Loading a competition into a workspace: validate the spec, its scorers and its data."""

from __future__ import annotations

from pathlib import Path

from referee.platform.core.errors import SpecError
from referee.platform.core.spec import Competition, check_data_files, load_competition
from referee.platform.store import Store


def validate(comp: Competition) -> None:
    """Check what the YAML schema cannot: scorers exist and accept the params, reference data parses."""
    from referee.platform.runtime.registry import settings_for
    from referee.platform.runtime.sandbox import SandboxPolicy
    from referee.scoring.engine import check_metric_params
    from referee.scoring.reference import load_reference

    problems = check_metric_params(comp)
    if problems:
        raise SpecError(str(comp.source_path), problems)
    SandboxPolicy.for_competition(comp)  # bad sandbox settings fail at load, naming sandbox.<field>
    settings_for(comp)  # likewise registry.<field>
    load_reference(comp)


def load_into_store(store: Store, path: str | Path) -> Competition:
    from referee.plugins.manager import get_plugin_manager

    comp = load_competition(path, check_files=False)
    get_plugin_manager().hook.referee_prepare_competition(competition=comp)
    check_data_files(comp)
    validate(comp)
    store.put_competition(comp)
    store.event("competition_loaded", str(comp.source_path), competition_id=comp.id)
    return comp
