"""Loading a competition: validate the spec and every plugin's section of it, derive what plugins
derive (beside the spec), check scorers and data, snapshot the data, and put it in the workspace.

Loading copies the (effective) reference file and input directory into the workspace by content hash
(``Store.snapshot_file``/``snapshot_tree``) and keeps those copies beside the spec as derived data, so a
later edit of the source files changes nothing until the host loads again. The competition's pages
(``pages/*.md``) and starting kit (``starting_kit/``, served as a zip) next to the YAML file are stored
as blobs too. A load of a spec whose data changed reports which scored submissions used the old data,
so the host can re-run them (``referee competition load --rerun``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from referee.platform.core.errors import NotFound, PluginError, SpecError
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


def _derived_for(comp: Competition, pm: PluginManager) -> Derived:
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
    return derived


def derive(comp: Competition, pm: PluginManager) -> Competition:
    """``comp`` with what every plugin derives from it beside the spec (``referee_derive_competition``);
    a phase with its own data, split or metrics is derived from separately (``Derived.phases``)."""
    derived = _derived_for(comp, pm)
    phases = {p.name: _derived_for(comp.for_phase(p.name), pm) for p in comp.phases if p.has_own_data}
    return comp.with_derived(derived.model_copy(update={"phases": phases}))


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

PAGES = ("overview", "rules", "evaluation", "data")  # pages/<name>.md, shown on the competition's pages
STARTING_KIT = "starting_kit"  # a directory next to the spec, offered as a zip download
MAX_PAGE_BYTES = 1 << 20


@dataclass
class LoadResult:
    """What a load did: the competition, which data changed since the last load, and the scored
    submissions that were scored against the old data."""

    competition: Competition
    reloaded: bool = False
    changed: list[str] = field(default_factory=list)  # "reference", "input" ("... (phase P)" with phases)
    stale: list[int] = field(default_factory=list)
    files: list[tuple[str, str, str, int]] = field(default_factory=list)  # (kind, name, sha256, size)


def phase_views(comp: Competition) -> list[tuple[str, Competition]]:
    """``(field prefix, view)`` of the competition and of each phase that scores against its own
    data, split or metrics: what validation and snapshots go through."""
    return [("", comp)] + [(f"phases[{i}].", comp.for_phase(p.name)) for i, p in enumerate(comp.phases)
                           if p.has_own_data]


def validate(comp: Competition) -> None:
    """Check what the YAML schema cannot: scorers exist and accept the params, reference data parses
    (the competition's, and each phase's own)."""
    problems: list[tuple[str, str]] = []
    for prefix, view in phase_views(comp):
        own_metrics = bool(prefix) and comp.phase(view.phase_name).metrics is not None
        for field_name, message in check_metric_params(view):
            # a problem of the competition's own metrics is named once, under metrics[...]
            problem = (f"{prefix}{field_name}" if own_metrics else field_name, message)
            if problem not in problems:
                problems.append(problem)
    if problems:
        raise SpecError(str(comp.source_path), problems)
    for _, view in phase_views(comp):
        load_reference(view)


def _reference_inside_inputs(comp: Competition) -> str | None:
    """Where the hidden reference sits inside the input directory (by path or as a hard link), if it
    does: the snapshot keeps that relation, so intake still refuses containers for such a spec."""
    ref, inp = comp.reference_path.resolve(), comp.input_path.resolve() if comp.input_path else None
    if inp is None or not inp.is_dir():
        return None
    if inp in ref.parents:
        return ref.relative_to(inp).as_posix()
    st = ref.stat()
    if st.st_nlink > 1:
        for dirpath, _, names in os.walk(inp):
            for name in names:
                other = os.lstat(os.path.join(dirpath, name))
                if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
                    return Path(dirpath, name).relative_to(inp).as_posix()
    return None


def _snapshot(store: Store, comp: Competition, derived: Derived, prefix: str = "") -> Derived:
    """``derived`` (of ``comp``, or of one of its phase views) with the data pointed at snapshots."""
    inside = _reference_inside_inputs(comp)
    try:
        new_input = store.snapshot_tree(comp.input_path) if comp.input_path is not None else None
        if inside is not None:
            assert new_input is not None
            new_ref = new_input / inside
        else:
            new_ref = store.snapshot_file(comp.reference_path)
    except ValueError as exc:  # a link inside the input directory
        raise SpecError(str(comp.source_path), [(f"{prefix}data.input", str(exc))]) from None
    data = comp.effective_data.model_copy(update={"input": new_input, "reference": new_ref})
    return derived.model_copy(update={"data": data, "sources": [*derived.sources, "snapshot"]})


def snapshot_data(store: Store, comp: Competition) -> Competition:
    """``comp`` with its (effective) reference and inputs, and those of every phase with its own
    data, pointed at read-only copies in the workspace, kept beside the spec as derived data (the
    spec as written is unchanged)."""
    derived = _snapshot(store, comp, comp.derived)
    phases = {}
    for prefix, view in phase_views(comp)[1:]:
        assert view.phase_name is not None
        phases[view.phase_name] = _snapshot(store, view, view.derived, prefix)
    return comp.with_derived(derived.model_copy(update={"phases": {**comp.derived.phases, **phases}}))


def competition_files(store: Store, comp: Competition) -> list[tuple[str, str, str, int]]:
    """Pages, starting kit and the public inputs (as a zip) of ``comp``, stored as blobs."""
    files: list[tuple[str, str, str, int]] = []
    pages = comp.base_dir / "pages"
    for name in PAGES:
        page = pages / f"{name}.md"
        if page.is_file():
            if page.stat().st_size > MAX_PAGE_BYTES:
                raise SpecError(str(page), [("", f"a page may hold at most {MAX_PAGE_BYTES} bytes")])
            sha, size = store.put_blob_file(page)
            files.append(("page", name, sha, size))
    kit = comp.base_dir / STARTING_KIT
    if kit.is_dir():
        try:
            sha, size = store.archive_tree(kit, STARTING_KIT)
        except ValueError as exc:
            raise SpecError(str(kit), [("", str(exc))]) from None
        files.append(("starting_kit", f"{comp.id}-starting-kit.zip", sha, size))
    archived: set[Path] = set()
    for _, view in phase_views(comp):
        inp = view.input_path
        if inp is None or inp in archived:
            continue
        archived.add(inp)
        sha, size = store.archive_tree(inp, "input")
        files.append(("input", input_archive_name(comp.id, view.phase_name), sha, size))
    return files


def input_archive_name(cid: str, phase: str | None = None) -> str:
    """The name of the public inputs' zip: of the competition, or of a phase with its own data."""
    return f"{cid}-input.zip" if phase is None else f"{cid}-{phase}-input.zip"


def inputs_of_phase(comp: Competition, phase: str) -> str | None:
    """The name of the inputs' zip that ``phase``'s submissions see (None when it has no inputs)."""
    view = comp.for_phase(phase)
    if view.input_path is None:
        return None
    own = comp.phase(phase).data is not None and view.input_path != comp.input_path
    return input_archive_name(comp.id, phase if own else None)


def _changes(before: Competition, after: Competition) -> dict[str, list[str]]:
    """Per phase of ``after``: which of its data (``reference``, ``input``) differ from ``before``'s."""
    out: dict[str, list[str]] = {}
    known = set(before.phase_names())
    for name in after.phase_names():
        old, new = before.for_phase(name) if name in known else before, after.for_phase(name)
        changed = [what for what, a, b in (("reference", old.reference_path, new.reference_path),
                                           ("input", old.input_path, new.input_path)) if a != b]
        if changed:
            out[name] = changed
    return out


def _stale(store: Store, comp_id: str, changes: dict[str, list[str]]) -> list[int]:
    """Scored submissions of the phases whose data changed (inputs matter to code submissions only)."""
    if not changes:
        return []
    return [s.id for s in store.submissions(comp_id, status="scored") if s.phase in changes
            and ("reference" in changes[s.phase] or s.kind != "predictions")]


def load(store: Store, path: str | Path) -> LoadResult:
    """Load a competition from a YAML file, a directory holding ``competition.yaml`` or a bundle
    (``referee competition pack``): the spec as written, with what plugins derived and the data
    snapshots (of the competition and of each phase with its own data) beside it."""
    from referee.platform.controller.bundles import is_bundle, unpack

    path = Path(path)
    if is_bundle(path):
        path = unpack(store, path)
    comp = load_competition(path)
    comp = snapshot_data(store, comp)
    validate(comp)
    try:
        before: Competition | None = store.get_competition(comp.id)
    except NotFound:
        before = None
    result = LoadResult(comp, reloaded=before is not None)
    if before is not None:
        changes = _changes(before, comp)
        single = len(comp.phases) == 1
        for phase, what in changes.items():
            result.changed += [w if single else f"{w} (phase {phase})" for w in what]
        result.stale = _stale(store, comp.id, changes)
    result.files = competition_files(store, comp)
    store.put_competition(comp)
    store.replace_competition_files(comp.id, result.files)
    store.event("competition_loaded", str(comp.source_path), competition_id=comp.id, changed=result.changed)
    return result


def load_into_store(store: Store, path: str | Path) -> Competition:
    """Load a competition (see ``load``) and return it."""
    return load(store, path).competition
