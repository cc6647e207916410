"""Built-in metrics: per-item sufficient statistics plus pure aggregates over their column sums."""
