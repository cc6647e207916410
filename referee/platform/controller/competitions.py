"""Loading a competition: validate the spec and every plugin's section of it, derive what plugins
derive (beside the spec), check scorers and data, and put it in the workspace."""

from __future__ import annotations

from pathlib import Path

from referee.platform.core.errors import PluginError, SpecError
from referee.platform.core.spec import Competition, Derived, check_data_files
from referee.platform.core.spec import load_competition as read_spec
from referee.platform.store import Store
from referee.plugins.manager import PluginManager, get_plugin_manager
from referee.scoring.engine import check_metric_params
from referee.scoring.reference import load_reference


def section_problems(comp: Competition, pm: PluginManager) -> list[tuple[str, str]]:
    """What the plugins' own checks find in their sections (each section's shape was checked when the
    YAML was read); a section the YAML leaves out is checked as None."""
    problems: list[tuple[str, str]] = []
    for name, section in pm.config_sections().items():
        if section.check is None:
            continue
        raw = comp.section_data(name)
        problems += section.check(None if raw is None else section.model.model_validate(raw), comp)
    return problems


def derive(comp: Competition, pm: PluginManager) -> Competition:
    """``comp`` with what every plugin derives from it beside the spec (``referee_derive_competition``)."""
    derived = Derived()
    for plugin, result in pm.results("referee_derive_competition", competition=comp):
        if result is None:
            continue
        if not isinstance(result, Derived):
            raise PluginError(f"plugin {plugin!r} returned {type(result).__name__} from "
                              "referee_derive_competition; expected a Derived record or None")
        try:
            derived = derived.merge(result, plugin)
        except ValueError as exc:
            raise SpecError(str(comp.source_path or comp.id), [("", str(exc))]) from None
    return comp.with_derived(derived)


def load_competition(path: str | Path, *, check_files: bool = True) -> Competition:
    """Read a competition YAML file with every installed plugin's sections and derive what the plugins
    derive. ``SpecError`` names the file and each bad field (``section.field`` for plugin sections)."""
    pm = get_plugin_manager()
    comp = read_spec(path, check_files=False, sections={n: s.model for n, s in pm.config_sections().items()})
    problems = section_problems(comp, pm)
    if problems:
        raise SpecError(str(comp.source_path), problems)
    comp = derive(comp, pm)
    if check_files:
        check_data_files(comp)
    return comp


def validate(comp: Competition) -> None:
    """Check what the YAML schema cannot: scorers exist and accept the params, reference data parses."""
    problems = check_metric_params(comp)
    if problems:
        raise SpecError(str(comp.source_path), problems)
    load_reference(comp)


def load_into_store(store: Store, path: str | Path) -> Competition:
    """Load, validate and store a competition (the spec as written, with what plugins derived beside it)."""
    comp = load_competition(path)
    validate(comp)
    store.put_competition(comp)
    store.event("competition_loaded", str(comp.source_path), competition_id=comp.id)
    return comp
