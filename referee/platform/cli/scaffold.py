"""``referee plugins new NAME``: write a ready-to-install scorer plugin package.

The package has a ``pyproject.toml`` registering the module under the ``referee`` entry point group,
a general scorer (``score(predictions, references, params, weights)``), a test that checks it against
a plain reference computation (including what bootstrap weights mean), a small example data set for
``referee score``, and a README. ``pip install -e`` it and the scorer shows in ``referee plugins list``.
"""

from __future__ import annotations

import re
from pathlib import Path

from referee.platform.core.errors import RefereeError

NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")

PYPROJECT = '''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "The {name} scorer for referee"
readme = "README.md"
requires-python = ">=3.11"
# referee itself is not listed: install this package into the environment that runs referee.
dependencies = ["numpy"]

[project.entry-points.referee]
{name} = "{module}.scorer"

[tool.setuptools]
packages = ["{module}"]
'''

SCORER = '''\
"""The ``{name}`` scorer for referee: mean absolute error, times ``scale``.

A general scorer: ``score(predictions, references, params, weights)`` returns the metric of the
items. ``weights`` is None (every item once) or how often each item was drawn in a bootstrap
resample, so referee's confidence intervals and leaderboard tiers work for it. Replace the body of
``score`` with your metric; keep the meaning of ``weights`` (the test checks it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from referee.plugins import Predictions, References, ScorerInfo, hookimpl

NAME = "{name}"
VERSION = "0.1.0"
DEFAULTS: dict[str, Any] = {{"scale": 1.0}}


def validate_params(params: Mapping[str, Any]) -> None:
    """Raise ValueError naming an unknown or bad parameter (referee calls this when a competition loads)."""
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"{{NAME}}: unknown parameter(s) {{unknown}}; known: {{sorted(DEFAULTS)}}")
    scale = params.get("scale", DEFAULTS["scale"])
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise ValueError(f"{{NAME}}: parameter 'scale' must be a positive number, got {{scale!r}}")


def score(predictions: Predictions, references: References, params: Mapping[str, Any],
          weights: np.ndarray | None) -> float:
    """Weighted mean absolute error of the one prediction column against numeric references."""
    validate_params(params)
    predicted = np.asarray(predictions.values, dtype=np.float64)[:, 0]
    truth = np.array([float(r) for r in references], dtype=np.float64)
    errors = np.abs(predicted - truth) * float(params.get("scale", DEFAULTS["scale"]))
    # np.average raises ZeroDivisionError when every weight is 0: referee leaves such a resample out
    return float(np.average(errors, weights=weights))


@hookimpl
def referee_scorers() -> list[ScorerInfo]:
    return [ScorerInfo(
        name=NAME, version=VERSION, higher_is_better=False, accepts=("score", "probability"),
        score=score, validate_params=validate_params, libraries=("numpy",),
        description="mean absolute error times scale",
    )]
'''

TEST = '''\
"""{name} agrees with a plain reference computation, and weights mean repeated items."""

from __future__ import annotations

import numpy as np
import pytest

from referee.plugins import Predictions
from {module} import scorer


def predictions(values: list[float]) -> Predictions:
    column = np.asarray(values, dtype=np.float64)[:, None]
    return Predictions(type="score", columns=["prediction"], values=column,
                       raw={{"prediction": [repr(v) for v in values]}})


def reference(predicted: list[float], truth: list[float], scale: float = 1.0) -> float:
    """The metric written out by hand, one item at a time."""
    return sum(abs(p - t) * scale for p, t in zip(predicted, truth)) / len(predicted)


@pytest.fixture
def data() -> tuple[list[float], list[float]]:
    rng = np.random.default_rng(0)
    return rng.normal(size=200).tolist(), rng.normal(size=200).tolist()


def test_matches_the_reference_computation(data):
    predicted, truth = data
    refs = [repr(t) for t in truth]
    assert scorer.score(predictions(predicted), refs, {{}}, None) == pytest.approx(reference(predicted, truth),
                                                                               abs=1e-12)
    got = scorer.score(predictions(predicted), refs, {{"scale": 2.5}}, None)
    assert got == pytest.approx(reference(predicted, truth, 2.5), abs=1e-12)


def test_weights_are_how_often_each_item_was_drawn(data):
    predicted, truth = data
    counts = np.random.default_rng(1).multinomial(len(predicted), np.full(len(predicted), 1 / len(predicted)))
    repeated = [i for i, k in enumerate(counts) for _ in range(k)]
    expected = reference([predicted[i] for i in repeated], [truth[i] for i in repeated])
    got = scorer.score(predictions(predicted), [repr(t) for t in truth], {{}}, counts.astype(float))
    assert got == pytest.approx(expected, abs=1e-12)


def test_registered_with_checked_parameters():
    (info,) = scorer.referee_scorers()
    assert info.name == "{name}" and info.general and not info.higher_is_better
    info.validate_params({{"scale": 3}})
    with pytest.raises(ValueError, match="scale"):
        info.validate_params({{"scale": -1}})
    with pytest.raises(ValueError, match="unknown"):
        info.validate_params({{"sacle": 1}})
'''

README = '''\
# {dist}

The `{name}` scorer for referee competitions: mean absolute error of one
numeric prediction column against numeric references, times `scale` (default 1).

```bash
pip install -e .                  # into the environment that runs referee
referee plugins list              # shows {name}: scorer:{name}
referee score --scorer {name} --predictions example/predictions.csv --references example/references.csv
python -m pytest tests            # checks the scorer against a reference computation
```

Use it in a competition:

```yaml
prediction: {{type: score, columns: [prediction]}}
metrics:
  - scorer: {name}
    params: {{scale: 1.0}}
```

`{module}/scorer.py` holds the metric. `score(predictions, references, params, weights)` gets the
predictions aligned to the references (`predictions.values` is an (n, columns) float array for
`score`/`probability` predictions, a list of strings for `label`/`text`), one reference string per
item, the metric's params, and `weights`: None, or how often each item was drawn in a bootstrap
resample. Return the metric of the data set with every item repeated that many times; that is
what gives referee's intervals and leaderboard tiers. A metric that is a ratio of per-item sums
(accuracy, mean error) can instead give `statistics` and `aggregate` (see referee's README), which
makes thousands of resamples a single matrix product.
'''

EXAMPLE_PREDICTIONS = "id,prediction\na,0.5\nb,2.0\nc,-1.25\nd,3.0\n"
EXAMPLE_REFERENCES = "id,label\na,1.0\nb,2.0\nc,-1.0\nd,1.0\n"


def names(name: str) -> tuple[str, str, str]:
    """(scorer name, distribution name, module name) for ``name``."""
    if not NAME_RE.match(name):
        raise RefereeError(f"{name!r} is not a usable plugin name: use lowercase letters, digits, '_' and '-', "
                           "starting with a letter (e.g. my_metric)")
    scorer = name.replace("-", "_")
    return scorer, "referee-" + scorer.replace("_", "-"), "referee_" + scorer


def write_plugin(name: str, parent: Path) -> Path:
    """Write the package into ``parent/<distribution name>`` and return that directory."""
    scorer, dist, module = names(name)
    root = parent / dist
    if root.exists():
        raise RefereeError(f"{root} already exists; choose another name or directory")
    fields = {"name": scorer, "dist": dist, "module": module}
    files = {
        "pyproject.toml": PYPROJECT, f"{module}/__init__.py": '"""The {name} scorer for referee."""\n',
        f"{module}/scorer.py": SCORER, "tests/test_scorer.py": TEST, "README.md": README,
    }
    for rel, template in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.format(**fields), encoding="utf-8")
    (root / "example").mkdir()
    (root / "example" / "predictions.csv").write_text(EXAMPLE_PREDICTIONS, encoding="utf-8")
    (root / "example" / "references.csv").write_text(EXAMPLE_REFERENCES, encoding="utf-8")
    return root
