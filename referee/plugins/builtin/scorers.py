"""Built-in scorers, registered through the same hook as third-party ones.

The metric code lives in ``referee.scoring.metrics`` (one ``Metric`` object per scorer); sacrebleu and
jiwer are imported only when a scorer runs, so loading this plugin stays cheap.
"""

from __future__ import annotations

from referee.plugins.hookspecs import hookimpl
from referee.plugins.records import ScorerInfo
from referee.scoring.metrics import (
    accuracy,
    asr,
    correlation,
    f1,
    log_loss,
    ranking,
    regression,
    translation,
)

BUILTIN_METRICS = (
    log_loss.log_loss, accuracy.accuracy, asr.wer, asr.cer, translation.bleu, translation.chrf, translation.ter,
    ranking.roc_auc, ranking.average_precision, f1.macro_f1, correlation.spearman, correlation.pearson,
    regression.rmse, regression.mae,
)


@hookimpl
def referee_scorers() -> list[ScorerInfo]:
    return [metric.info() for metric in BUILTIN_METRICS]
