"""Multi-label AUROC: one ROC AUC per finding and their mean (mAUC), the paper's headline metric.

An ``evaluate`` module shipped in the package and loaded by path, so it works offline
(``evaluate.load("roc_auc", "multilabel")`` downloads its script from the Hub).
Targets equal to -1 (uncertain, "ignore" policy) are left out of that finding's AUROC. A finding
with one class only among the kept targets has no AUROC: it is reported as None and left out of
the mean, never counted as 0.5.
"""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

_DESCRIPTION = "Per-finding ROC AUC and their mean over findings with both classes present."
_KWARGS_DESCRIPTION = """
Args:
    predictions: list of score vectors (probabilities or logits), one per image.
    references: list of 0/1 target vectors (-1 = ignore), one per image.
    label_names: optional names, one per finding.
Returns:
    auroc: dict name -> AUROC (None when undefined); mauc: mean of the defined ones;
    average_precision: dict name -> AP (None when undefined); undefined: names left out;
    positives / negatives: dict name -> count.
"""


class MultilabelAuroc(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    # float64: float32 rounds close probabilities together, and the ties shift AUROC.
                    "predictions": datasets.Sequence(datasets.Value("float64")),
                    "references": datasets.Sequence(datasets.Value("float32")),
                }
            ),
        )

    def _compute(self, predictions, references, label_names=None):
        scores = np.asarray(predictions, dtype=np.float64)
        targets = np.asarray(references, dtype=np.float64)
        names = (
            list(label_names)
            if label_names is not None
            else [str(i) for i in range(scores.shape[1])]
        )
        auroc, ap, pos, neg, undefined = {}, {}, {}, {}, []
        for k, name in enumerate(names):
            keep = targets[:, k] != -1
            y, s = targets[keep, k], scores[keep, k]
            pos[name], neg[name] = int((y == 1).sum()), int((y == 0).sum())
            if pos[name] == 0 or neg[name] == 0:
                auroc[name] = ap[name] = None
                undefined.append(name)
                continue
            auroc[name] = float(roc_auc_score(y, s))
            ap[name] = float(average_precision_score(y, s))
        defined = [v for v in auroc.values() if v is not None]
        return {
            "auroc": auroc,
            "mauc": float(np.mean(defined)) if defined else None,
            "average_precision": ap,
            "undefined": undefined,
            "positives": pos,
            "negatives": neg,
        }
