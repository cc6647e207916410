"""Plugin manager: loads built-ins and the ``referee`` entry point group, reports broken plugins."""

from __future__ import annotations

import importlib
import importlib.metadata as md
import logging
import os
import threading
from typing import Any, Iterable

import pluggy

from referee.platform.core.errors import NotFound, PluginError
from referee.plugins import hookspecs
from referee.plugins.records import (
    BackendInfo,
    CostTrackerInfo,
    PluginReport,
    ScorerInfo,
    SubmissionKindInfo,
)

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "referee"

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


def _strict_default() -> bool:
    return os.environ.get("REFEREE_STRICT_PLUGINS", "").lower() in {"1", "true", "yes"}


class PluginManager:
    """Wraps a pluggy manager with referee's loading policy and typed accessors."""

    def __init__(self, *, entrypoints: bool = True, strict: bool | None = None,
                 extra: Iterable[Any] = (), builtins: bool = True):
        self.strict = _strict_default() if strict is None else strict
        self.pm = pluggy.PluginManager("referee")
        self.pm.add_hookspecs(hookspecs)
        self.reports: list[PluginReport] = []
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
            self.pm.register(obj, name=name)
            self.reports.append(PluginReport(name=name, version=getattr(obj, "__version__", "local"),
                                             provides=self._provides(obj)))

    def _load(self, name: str, target: str, *, version: str, builtin: bool, ep: Any = None) -> None:
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
        for hookname, label in (("referee_scorers", "scorer"), ("referee_backends", "backend"),
                                ("referee_cost_trackers", "cost-tracker"),
                                ("referee_submission_kinds", "submission-kind")):
            fn = getattr(obj, hookname, None)
            if fn is not None:
                for rec in fn() or []:
                    out.append(f"{label}:{rec.name}")
        for hookname in ("referee_job_started", "referee_job_finished", "referee_dispatch_check"):
            if getattr(obj, hookname, None) is not None:
                out.append(f"hook:{hookname}")
        return out

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def _collect(self, hook: Any, kind: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for records in reversed(hook()):  # pluggy calls last-registered first; let later override
            for rec in records or []:
                out[rec.name] = rec
        return out

    def scorers(self) -> dict[str, ScorerInfo]:
        return self._collect(self.pm.hook.referee_scorers, "scorer")

    def scorer(self, name: str) -> ScorerInfo:
        found = self.scorers()
        if name not in found:
            raise NotFound(f"no scorer named {name!r}; installed scorers: {', '.join(sorted(found))}")
        return found[name]

    def backends(self) -> dict[str, BackendInfo]:
        return self._collect(self.pm.hook.referee_backends, "backend")

    def backend(self, name: str) -> BackendInfo:
        found = self.backends()
        if name not in found:
            raise NotFound(f"no backend named {name!r}; installed backends: {', '.join(sorted(found))}")
        return found[name]

    def cost_trackers(self) -> dict[str, CostTrackerInfo]:
        return self._collect(self.pm.hook.referee_cost_trackers, "cost-tracker")

    def submission_kinds(self) -> dict[str, SubmissionKindInfo]:
        return self._collect(self.pm.hook.referee_submission_kinds, "submission-kind")


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


_default: PluginManager | None = None
_lock = threading.Lock()


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager (created on first use)."""
    global _default
    with _lock:
        if _default is None:
            _default = PluginManager()
        return _default


def set_plugin_manager(pm: PluginManager | None) -> None:
    """Replace the process-wide manager (tests use this to isolate from installed plugins)."""
    global _default
    with _lock:
        _default = pm
