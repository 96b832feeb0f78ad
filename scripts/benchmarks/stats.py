"""Percentiles for the benchmark scripts."""
import statistics


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def median_percentiles(runs):
    """The median of each percentile over runs, with the runs themselves listed."""
    keys = ("p50_ms", "p95_ms", "p99_ms")
    return dict(runs[0], **{k: round(statistics.median(r[k] for r in runs), 2) for k in keys},
                rounds=[{k: r[k] for k in keys} for r in runs])


def percentiles(run):
    return f"p50 {run['p50_ms']} ms, p95 {run['p95_ms']} ms, p99 {run['p99_ms']} ms"
