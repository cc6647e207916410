"""Built-in scorers, registered through the same hook as third-party ones.

The metric code lives in ``referee.scoring.metrics``; sacrebleu and jiwer are imported only when a
scorer runs, so loading this plugin stays cheap.
"""

from __future__ import annotations

from referee.plugins.hookspecs import hookimpl
from referee.plugins.records import ScorerInfo
from referee.scoring.metrics import _common, accuracy, asr, log_loss, translation


def _sacrebleu_scorer(metric, higher_is_better: bool, description: str) -> ScorerInfo:
    return ScorerInfo(
        name=metric.name, version=_common.scorer_version(translation.REVISION),
        higher_is_better=higher_is_better, accepts=translation.ACCEPTS,
        statistics=metric.statistics, aggregate=metric.aggregate, libraries=translation.LIBRARIES,
        signature=metric.signature, details=metric.details, validate_params=metric.validate_params,
        description=description,
    )


def _asr_scorer(metric, description: str) -> ScorerInfo:
    return ScorerInfo(
        name=metric.name, version=_common.scorer_version(asr.REVISION), higher_is_better=False,
        accepts=asr.ACCEPTS, statistics=metric.statistics, aggregate=asr.aggregate,
        libraries=asr.LIBRARIES, signature=metric.signature, validate_params=metric.validate_params,
        description=description,
    )


@hookimpl
def referee_scorers():
    return [
        ScorerInfo(
            name=log_loss.NAME, version=_common.scorer_version(log_loss.REVISION), higher_is_better=False,
            accepts=log_loss.ACCEPTS, statistics=log_loss.statistics, aggregate=log_loss.aggregate,
            libraries=log_loss.LIBRARIES, signature=log_loss.signature,
            validate_params=log_loss.validate_params,
            description="log loss (cross-entropy), binary or multiclass, clipped at eps",
        ),
        ScorerInfo(
            name=accuracy.NAME, version=_common.scorer_version(accuracy.REVISION), higher_is_better=True,
            accepts=accuracy.ACCEPTS, statistics=accuracy.statistics, aggregate=accuracy.aggregate,
            libraries=accuracy.LIBRARIES, signature=accuracy.signature,
            validate_params=accuracy.validate_params,
            description="fraction of exactly matching labels (or thresholded / argmax probabilities)",
        ),
        _asr_scorer(asr.wer, "word error rate (jiwer)"),
        _asr_scorer(asr.cer, "character error rate (jiwer)"),
        _sacrebleu_scorer(translation.bleu, True, "corpus BLEU (sacrebleu)"),
        _sacrebleu_scorer(translation.chrf, True, "chrF / chrF++ (sacrebleu)"),
        _sacrebleu_scorer(translation.ter, False, "translation edit rate (sacrebleu)"),
    ]
