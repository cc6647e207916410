"""``referee score``: score a prediction file against a reference file with any installed scorer.

No workspace and no competition file: the two files, the scorer and its parameters make a one-metric
competition in memory, and the prediction file goes through the same intake validation (errors
name the file and line) and the same scoring engine (value, bootstrap interval, signature) as a
real submission.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import click
import yaml

from referee.platform.core.errors import RefereeError
from referee.platform.core.predictions import NUMERIC_TYPES, PREDICTION_TYPES

ADHOC_ID = "referee-score"


def parse_params(items: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, str]]:
    """``k=v`` pairs: (values read as YAML, as in a competition file: ``0.3``, ``true``, ``[a, b]``;
    the values as typed)."""
    parsed: dict[str, Any] = {}
    typed: dict[str, str] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--param")
        typed[key] = raw
        try:
            parsed[key] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            parsed[key] = raw
    return parsed, typed


def settle_params(info: Any, parsed: dict[str, Any], typed: dict[str, str]) -> dict[str, Any]:
    """The parsed parameters, or, when the scorer refuses them, the first combination that keeps some
    values as typed (``positive_label=0`` is the label "0", not the number)."""
    if info.validate_params is None:
        return parsed

    def valid(params: dict[str, Any]) -> bool:
        try:
            info.validate_params(params)
        except (ValueError, TypeError, KeyError):
            return False
        return True

    if valid(parsed):
        return parsed
    retyped = [k for k, v in parsed.items() if not isinstance(v, str)]
    for size in range(1, len(retyped) + 1):
        for keys in itertools.combinations(retyped, size):
            trial = {**parsed, **{k: typed[k] for k in keys}}
            if valid(trial):
                return trial
    return parsed  # the scorer's own error names the bad parameter


def _header(path: Path, fmt: str, txt_column: str) -> list[str]:
    from referee.platform.core.tables import read_table
    return read_table(path, fmt, source=str(path), txt_column=txt_column).header or [txt_column]


def _guess_type(path: Path, fmt: str, columns: list[str], accepts: tuple[str, ...]) -> str:
    """The prediction type to read the file as: numeric when every cell is a number and the scorer
    takes numbers (``probability`` when all lie in [0, 1] and it takes probabilities), else text."""
    from referee.platform.core.tables import read_table

    table = read_table(path, fmt, source=str(path), txt_column=columns[0])
    numeric = [t for t in accepts if t in NUMERIC_TYPES]
    textual = [t for t in accepts if t not in NUMERIC_TYPES]
    if numeric:
        try:
            values = [float(v) for c in columns for v in table.columns.get(c, [])]
            is_number = all(math.isfinite(v) for v in values)
        except ValueError:
            is_number = False
        if is_number:
            in_unit = all(0.0 <= v <= 1.0 for v in values)
            if "probability" in numeric and (in_unit or "score" not in numeric):
                return "probability"
            return "score" if "score" in numeric else numeric[0]
        if not textual:
            return numeric[0]  # intake names the first cell that is not a number
    return textual[0] if textual else PREDICTION_TYPES[0]


def adhoc_competition(scorer: str, params: tuple[str, ...], predictions: Path, references: Path, *,
                      id_column: str, reference_columns: list[str] | None, prediction_type: str | None,
                      resamples: int, seed: int, confidence: float, intervals: bool) -> Any:
    """A one-metric competition over the two files (every item public); ``params`` are KEY=VALUE."""
    from referee.platform.core.errors import SpecError
    from referee.platform.core.spec import Competition
    from referee.platform.core.tables import guess_format
    from referee.plugins.manager import get_plugin_manager

    info = get_plugin_manager().scorer(scorer)
    settled = settle_params(info, *parse_params(params))
    for path, what in ((predictions, "predictions"), (references, "references")):
        if not path.is_file():
            raise RefereeError(f"{path}: {what} file not found")
    pred_fmt, ref_fmt = guess_format(predictions), guess_format(references)
    ref_header = _header(references, ref_fmt, "label")
    if ref_fmt != "txt" and id_column not in ref_header:
        raise RefereeError(f"{references}: no id column {id_column!r} (columns: {', '.join(ref_header)}); "
                           "name it with --id-column")
    if not reference_columns:
        candidates = [c for c in ref_header if c != id_column]
        if len(candidates) != 1:
            raise RefereeError(f"{references}: {len(candidates)} reference columns {candidates}; "
                               "choose with --reference-column")
        reference_columns = candidates
    columns = [c for c in _header(predictions, pred_fmt, "prediction") if c != id_column]
    if pred_fmt == "txt":
        columns = ["prediction"]
    if not columns:
        raise RefereeError(f"{predictions}: no prediction column besides the id column {id_column!r}")
    kind = prediction_type or _guess_type(predictions, pred_fmt, columns, info.accepts)
    doc = {
        "id": ADHOC_ID, "title": f"{scorer} on {predictions.name}",
        "prediction": {"format": pred_fmt, "id_column": id_column, "type": kind, "columns": columns,
                       "max_bytes": max(1, predictions.stat().st_size)},
        "data": {"reference": str(references.resolve()), "reference_format": ref_fmt,
                 "reference_id_column": id_column, "reference_columns": reference_columns},
        "metrics": [{"scorer": scorer, "params": settled}],
        "leaderboard": {"intervals": {"enabled": intervals, "resamples": resamples, "seed": seed,
                                      "confidence": confidence}},
    }
    try:
        return Competition.model_validate(doc)
    except ValueError as exc:
        raise SpecError("referee score", [("", " ".join(str(exc).split()))]) from None


def score_files(comp: Any, predictions: Path) -> Any:
    """Validate and score ``predictions``; the one result (every item is in the public split)."""
    from referee.platform.controller.scoring import score_file
    from referee.platform.core.errors import SpecError
    from referee.scoring.engine import check_metric_params

    problems = check_metric_params(comp)
    if problems:
        raise SpecError("referee score", problems)
    (result,) = [r for r in score_file(comp, predictions, source=str(predictions)) if r.split == "public"]
    return result


def _where(field: str, references: Path) -> str:
    if field.startswith("data."):
        return str(references)
    return {"metrics[0].params": "--param", "metrics[0].scorer": "--scorer"}.get(field, "referee score")


def _number(v: float | None) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


@click.command()
@click.option("--scorer", required=True, help="Any installed scorer (see `referee plugins list`).")
@click.option("--predictions", "predictions", required=True, type=click.Path(path_type=Path),
              help="Prediction file (csv, tsv, jsonl or txt).")
@click.option("--references", "references", required=True, type=click.Path(path_type=Path),
              help="Reference file with the same ids.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="Scorer parameter (repeatable).")
@click.option("--id-column", default="id", show_default=True, help="Id column of both files.")
@click.option("--reference-column", "reference_columns", multiple=True,
              help="Reference column(s) (default: the one column besides the id).")
@click.option("--type", "prediction_type", type=click.Choice(PREDICTION_TYPES), default=None,
              help="Prediction type (default: numeric when every cell is a number and the scorer takes numbers).")
@click.option("--resamples", type=click.IntRange(1), default=1000, show_default=True,
              help="Bootstrap resamples for the interval.")
@click.option("--seed", type=click.IntRange(0), default=12345, show_default=True)
@click.option("--confidence", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.95,
              show_default=True)
@click.option("--no-interval", is_flag=True, help="Skip the bootstrap interval.")
@click.option("--json", "as_json", is_flag=True,
              help='Print {"scorer", "value", "ci_low", "ci_high", "signature"}.')
def score(scorer: str, predictions: Path, references: Path, params: tuple[str, ...], id_column: str,
          reference_columns: tuple[str, ...], prediction_type: str | None, resamples: int, seed: int,
          confidence: float, no_interval: bool, as_json: bool) -> None:
    """Score a prediction file against a reference file with any installed scorer (no workspace)."""
    from referee.platform.core.errors import SpecError
    from referee.scoring.engine import ScorerFailed

    try:
        comp = adhoc_competition(scorer, params, predictions, references, id_column=id_column,
                                 reference_columns=list(reference_columns) or None,
                                 prediction_type=prediction_type, resamples=resamples, seed=seed,
                                 confidence=confidence, intervals=not no_interval)
        result = score_files(comp, predictions)
    except ScorerFailed as exc:
        if not isinstance(exc.__cause__, ValueError):  # a bug, not a clear refusal: show where it broke
            click.echo(exc.traceback, err=True, nl=False)
        raise
    except SpecError as exc:  # one line naming the file or option, not a competition spec
        raise RefereeError("; ".join(f"{_where(field, references)}: {msg}" for field, msg in exc.problems)) from None
    out = {"scorer": scorer, "value": _number(result.value), "ci_low": _number(result.ci_low),
           "ci_high": _number(result.ci_high), "signature": result.provenance["signature"]}
    if as_json:
        click.echo(json.dumps(out))
        return
    ci = "" if out["ci_low"] is None else f"  [{out['ci_low']:.6g}, {out['ci_high']:.6g}] " \
                                          f"({confidence * 100:g}% bootstrap interval)"
    value = "nan" if out["value"] is None else f"{out['value']:.6g}"
    click.echo(f"{scorer} = {value}{ci}  n={result.n_items}, {comp.prediction.type} predictions")
    click.echo(out["signature"])
