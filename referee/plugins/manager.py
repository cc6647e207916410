"""Plugin manager and the process runtime.

``PluginManager`` loads the built-ins and the ``referee`` entry point group, reports broken plugins
(skipped, or fatal in strict mode), leaves out plugins disabled by name (``REFEREE_DISABLE_PLUGINS``)
and gives typed access to what the plugins provide.

``Runtime`` owns the process-wide state: the plugin manager and every cache (reference data,
validated config sections, significance results, CheckList suite runs, cost trackers, resample
weights). Code reaches it with ``get_runtime()`` (or ``get_plugin_manager()``); tests build a fresh
one per test with ``reset_runtime``, so no cache outlives a test.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import json
import logging
import os
import threading
from collections.abc import Iterable
from typing import Any, TypeVar

import pluggy
from pydantic import BaseModel, ValidationError

from referee.platform.core.cache import Cache
from referee.platform.core.errors import NotFound, PluginError, SpecError
from referee.platform.core.spec import Competition, validation_problems
from referee.plugins import hookspecs
from referee.plugins.records import (
    BackendInfo,
    ConfigSection,
    CostTrackerInfo,
    LeaderboardRenderer,
    PluginReport,
    ScorerInfo,
    SubmissionKindInfo,
)

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "referee"
DISABLE_ENV = "REFEREE_DISABLE_PLUGINS"

# Built-ins, listed in one place. They are also declared as entry points in pyproject.toml;
# listing them here keeps a source checkout working when the package metadata is absent.
BUILTIN_PLUGINS: dict[str, str] = {
    "builtin_scorers": "referee.plugins.builtin.scorers",
    "builtin_backends": "referee.plugins.builtin.backends",
    "builtin_kinds": "referee.plugins.builtin.kinds",
    "builtin_containers": "referee.plugins.builtin.containers",
    "builtin_cost": "referee.plugins.builtin.cost",
    "builtin_checklist": "referee.plugins.builtin.checklist",
    "builtin_stats": "referee.plugins.builtin.stats",
    "builtin_moderation": "referee.plugins.builtin.moderation",
}

# Hooks that return named records: `referee plugins list` shows what each plugin provides by name.
_RECORD_HOOKS = (("referee_scorers", "scorer"), ("referee_backends", "backend"),
                 ("referee_cost_trackers", "cost-tracker"), ("referee_submission_kinds", "submission-kind"),
                 ("referee_config_sections", "config-section"), ("referee_leaderboard_renderers", "renderer"))


def _strict_default() -> bool:
    return os.environ.get("REFEREE_STRICT_PLUGINS", "").lower() in {"1", "true", "yes"}


def _disabled_default() -> set[str]:
    return {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


class PluginManager:
    """Wraps a pluggy manager with referee's loading policy and typed accessors.

    ``disable``: plugin names to leave out (default: ``REFEREE_DISABLE_PLUGINS``, comma-separated);
    they are listed in ``reports`` as disabled.
    """

    def __init__(self, *, entrypoints: bool = True, strict: bool | None = None,
                 extra: Iterable[Any] = (), builtins: bool = True, disable: Iterable[str] | None = None):
        self.strict = _strict_default() if strict is None else strict
        self.disabled = _disabled_default() if disable is None else set(disable)
        self.pm = pluggy.PluginManager("referee")
        self.pm.add_hookspecs(hookspecs)
        self.reports: list[PluginReport] = []
        self._sections: dict[str, ConfigSection] | None = None
        if builtins:
            for name, module in BUILTIN_PLUGINS.items():
                self._load(name, module, version=_dist_version("referee"), builtin=True)
        if entrypoints:
            for ep in _entry_points():
                if ep.name in BUILTIN_PLUGINS or ep.value in BUILTIN_PLUGINS.values():
                    continue
                dist = getattr(ep, "dist", None)
                version = dist.version if dist is not None else "unknown"
                self._load(ep.name, ep.value, version=version, builtin=False, ep=ep)
        for obj in extra:
            name = getattr(obj, "__name__", type(obj).__name__)
            version = getattr(obj, "__version__", "local")
            if name in self.disabled:
                self.reports.append(PluginReport(name=name, version=version, disabled=True))
                continue
            self.pm.register(obj, name=name)
            self.reports.append(PluginReport(name=name, version=version, provides=self._provides(obj)))

    def _load(self, name: str, target: str, *, version: str, builtin: bool, ep: Any = None) -> None:
        if name in self.disabled:
            self.reports.append(PluginReport(name=name, version=version, disabled=True))
            return
        try:
            obj = ep.load() if ep is not None else importlib.import_module(target)
            self.pm.register(obj, name=name)
            provides = self._provides(obj)
        except Exception as exc:  # a broken third-party plugin must not take the platform down
            msg = f"plugin {name!r} ({target}) failed to load: {type(exc).__name__}: {exc}"
            if builtin and isinstance(exc, ModuleNotFoundError) and exc.name == target:
                return  # an optional built-in module that is not part of this build
            if self.strict:
                raise PluginError(msg + " (strict plugin mode is on)") from exc
            log.warning(msg)
            if name in self.pm.list_name_plugin():
                self.pm.unregister(name=name)
            self.reports.append(PluginReport(name=name, version=version, error=msg))
            return
        self.reports.append(PluginReport(name=name, version=version, provides=provides))

    def _provides(self, obj: Any) -> list[str]:
        out: list[str] = []
        for hookname, label in _RECORD_HOOKS:
            fn = getattr(obj, hookname, None)
            if fn is not None:
                for rec in fn() or []:
                    out.append(f"{label}:{rec.name}")
        record_hooks = {h for h, _ in _RECORD_HOOKS}
        for hookname in sorted(h for h in dir(hookspecs) if h.startswith("referee_") and h not in record_hooks):
            if getattr(obj, hookname, None) is not None:
                out.append(f"hook:{hookname}")
        return out

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def results(self, hookname: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """``(plugin name, result)`` of every implementation of a hook, in registration order (None
        results included): for callers that must say which plugin returned what."""
        out = []
        for impl in getattr(self.pm.hook, hookname).get_hookimpls():  # last registered last
            if impl.hookwrapper or impl.wrapper:  # wrappers wrap the plain calls: nothing of their own
                continue
            out.append((impl.plugin_name, impl.function(*(kwargs[a] for a in impl.argnames))))
        return out

    def _collect(self, hook: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for records in reversed(hook()):  # pluggy calls last-registered first; let later override
            for rec in records or []:
                out[rec.name] = rec
        return out

    def scorers(self) -> dict[str, ScorerInfo]:
        return self._collect(self.pm.hook.referee_scorers)

    def scorer(self, name: str) -> ScorerInfo:
        found = self.scorers()
        if name not in found:
            raise NotFound(f"no scorer named {name!r}; installed scorers: {', '.join(sorted(found))}")
        return found[name]

    def backends(self) -> dict[str, BackendInfo]:
        return self._collect(self.pm.hook.referee_backends)

    def backend(self, name: str) -> BackendInfo:
        found = self.backends()
        if name not in found:
            raise NotFound(f"no backend named {name!r}; installed backends: {', '.join(sorted(found))}")
        return found[name]

    def cost_trackers(self) -> dict[str, CostTrackerInfo]:
        return self._collect(self.pm.hook.referee_cost_trackers)

    def submission_kinds(self) -> dict[str, SubmissionKindInfo]:
        return self._collect(self.pm.hook.referee_submission_kinds)

    def config_sections(self) -> dict[str, ConfigSection]:
        """Every plugin's section of the competition YAML, by name (asked once: sections are read often)."""
        if self._sections is None:
            self._sections = self._collect(self.pm.hook.referee_config_sections)
        return self._sections

    def leaderboard_renderers(self) -> dict[str, LeaderboardRenderer]:
        """Output formats plugins add to the built-in ones (``referee.platform.leaderboard.render``)."""
        return self._collect(self.pm.hook.referee_leaderboard_renderers)


def _entry_points() -> list[Any]:
    try:
        return list(md.entry_points(group=ENTRY_POINT_GROUP))
    except Exception:  # pragma: no cover - broken metadata
        return []


def _dist_version(name: str) -> str:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        from referee import __version__
        return __version__


# -- the runtime -----------------------------------------------------------------------------------
M = TypeVar("M", bound=BaseModel)

# Named caches and their sizes; a cache not listed here gets DEFAULT_CACHE_SIZE entries.
CACHE_SIZES: dict[str, int] = {"sections": 256, "reference": 8, "significance": 8, "bootstrap.weights": 4,
                               "checklist.runs": 4, "checklist.suites": 2, "checklist.inputs": 4,
                               "cost.trackers": 256}
DEFAULT_CACHE_SIZE = 64


class Runtime:
    """The process's plugin manager and caches (datasette's ``Datasette`` object plays this part).

    ``cache(name)`` hands out a named thread-safe LRU cache, created on first use; ``clear()`` empties
    every one of them. The plugin manager is created on first use unless one is given.
    """

    def __init__(self, plugins: PluginManager | None = None):
        self._plugins = plugins
        self._caches: dict[str, Cache[Any, Any]] = {}
        self._lock = threading.Lock()

    @property
    def plugins(self) -> PluginManager:
        with self._lock:
            if self._plugins is None:
                self._plugins = PluginManager()
            return self._plugins

    def cache(self, name: str) -> Cache[Any, Any]:
        with self._lock:
            found = self._caches.get(name)
            if found is None:
                found = self._caches[name] = Cache(CACHE_SIZES.get(name, DEFAULT_CACHE_SIZE))
            return found

    def clear(self) -> None:
        with self._lock:
            caches = list(self._caches.values())
        for c in caches:
            c.clear()

    def section(self, comp: Competition, name: str, model: type[M]) -> M:
        """``comp``'s ``name:`` section validated with ``model`` (its defaults when the YAML leaves the
        section out), cached by content. ``SpecError`` names ``name.field`` and the YAML file; the
        owning plugin's ``check`` runs too when ``model`` is the model it registered."""
        raw = comp.section_data(name)
        registered = self.plugins.config_sections().get(name)
        key = (name, model, json.dumps(raw, sort_keys=True, default=str))
        where = str(comp.source_path or comp.id)

        def validate() -> M:
            if raw is not None and not isinstance(raw, dict):
                raise SpecError(where, [(name, f"must be a mapping of settings, got {type(raw).__name__}")])
            try:
                return model.model_validate(raw or {})
            except ValidationError as exc:
                raise SpecError(where, validation_problems(exc, name)) from None

        value = self.cache("sections").get_or_compute(key, validate)
        if registered is not None and registered.model is model and registered.check is not None:
            problems = registered.check(value, comp)
            if problems:
                raise SpecError(where, problems)
        return value


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def get_runtime() -> Runtime:
    """The process runtime (created on first use)."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = Runtime()
        return _runtime


def reset_runtime(plugins: PluginManager | None = None) -> Runtime:
    """Start a fresh runtime (empty caches; ``plugins``, or a default manager on first use)."""
    global _runtime
    with _runtime_lock:
        _runtime = Runtime(plugins)
        return _runtime


def get_plugin_manager() -> PluginManager:
    """The runtime's plugin manager (created on first use)."""
    return get_runtime().plugins


def set_plugin_manager(pm: PluginManager | None) -> None:
    """Start a fresh runtime with ``pm`` (tests use this to isolate from installed plugins)."""
    reset_runtime(pm)


def config_section(comp: Competition, name: str, model: type[M]) -> M:
    """The competition's ``name:`` section as ``model`` (see ``Runtime.section``)."""
    return get_runtime().section(comp, name, model)


def optional_config_section(comp: Competition, name: str, model: type[M]) -> M | None:
    """Like ``config_section``, but None when the YAML leaves the section out."""
    if comp.section_data(name) is None:
        return None
    return get_runtime().section(comp, name, model)
