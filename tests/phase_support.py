"""The two-phase example (``examples/challenge``) with phase dates a test controls."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import yaml
from conftest import prepare_example


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).isoformat()


def set_phases(root: Path, *, dev_end: dt.datetime, final_end: dt.datetime, dev_start: dt.datetime | None = None,
               **final: Any) -> Path:
    """Rewrite the challenge's phase dates (the final phase starts when dev ends) and, with ``final``,
    fields of the final phase; returns the spec's path."""
    spec = root / "competition.yaml"
    doc = yaml.safe_load(spec.read_text())
    dev, fin = doc["phases"]
    dev["start"] = iso(dev_start or dev_end - dt.timedelta(days=30))
    dev["end"] = fin["start"] = iso(dev_end)
    fin["end"] = iso(final_end)
    fin.update(final)
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    return spec


def challenge(dest: Path, *, now: dt.datetime | None = None, **final: Any) -> Path:
    """The challenge under ``dest`` with its development phase open now (for a day) and the final
    phase after it (for a day)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    root = prepare_example("challenge", dest)
    set_phases(root, dev_end=now + dt.timedelta(days=1), final_end=now + dt.timedelta(days=2), **final)
    return root
