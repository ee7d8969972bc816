"""How the metrics in ``metrics.nc`` are named in tables, and which are reported beside a main
metric (plain data: ``core.metrics`` computes the metrics, ``analysis.table`` prints them)."""

from __future__ import annotations

#: How tables and figures name each metric.
METRIC_LABELS: dict[str, str] = {
    "rmse": "RMSE (mean over tasks)",
    "explained_variance": "explained variance per task, mean (%)",
    "accuracy": "accuracy",
    "ndcg": "NDCG@10",
    "spearman": "Spearman",
    "pooled_explained_variance": "explained variance, pooled (%)",
    "nmse": "nMSE",
    "pooled_rmse": "RMSE, pooled",
}

#: The metrics a table reports beside each main metric (where the run stored them).
COMPANION_METRICS: dict[str, tuple[str, ...]] = {
    "pooled_explained_variance": ("nmse", "explained_variance"),
    "pooled_rmse": ("ndcg",),
}
