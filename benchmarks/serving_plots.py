"""The serving benchmark's picture: batching modes side by side, throughput against the library, added latency."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# (label, result key, target in ms) of the added-latency panel: the targets on this machine
ADDED = (("embedded", "added_latency_embedded", 5.0), ("Redis", "added_latency_redis", 10.0))


def plot(payload: dict[str, Any], path: Path) -> None:
    """Four panels: latency CDF and percentiles of the two batching modes, throughput, and added latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    (cdf, bars), (tput, added) = axes
    modes, colors = ["iteration", "static"], ["tab:blue", "tab:orange"]
    for mode, color in zip(modes, colors, strict=True):
        lat = sorted(payload["batching"][mode]["latencies_ms"])
        if lat:
            cdf.plot(lat, [i / len(lat) for i in range(len(lat))], color=color, label=f"{mode} batching")
    cdf.set_xscale("log")
    cdf.xaxis.set_minor_formatter(NullFormatter())
    cdf.set_xticks([10, 20, 50, 100, 200, 500, 1000], ["10", "20", "50", "100", "200", "500", "1000"])
    cdf.set(xlabel="latency (ms)", ylabel="fraction of requests")
    cdf.set_title(f"Same offered load ({payload['config']['rate_per_s']:g} req/s): latency CDF")
    cdf.legend()
    for i, q in enumerate(("p50_ms", "p95_ms", "p99_ms")):
        bars.bar([j + (i - 1) * 0.25 for j in range(2)], [payload["batching"][m][q] for m in modes], 0.25, label=q)
    bars.set_xticks(range(2), [f"{m} batching" for m in modes])
    bars.set(ylabel="ms", title="Iteration-level batching: no waiting for others' rows")
    bars.legend()
    tp = payload["throughput"]
    labels = ["library", f"server\n(batch {tp['batch']}, same)", "server\n(merged batches)"]
    values = [tp["library_samples_per_s"], tp["server_samples_per_s"], tp["server_default_batching_samples_per_s"]]
    tput.bar(labels, values, color=["tab:gray", "tab:blue", "tab:green"])
    for x, v in enumerate(values):
        tput.text(x, v, f"{v:.0f}\n({v / values[0]:.0%})", ha="center", va="bottom")
    tput.set(ylabel="samples / s", title=f"/sample throughput, {tp['clients']} clients", ylim=(0, max(values) * 1.25))
    measured = [(label, payload[key], target) for label, key, target in ADDED if "p50_added_ms" in payload[key]]
    for x, (_, r, target) in enumerate(measured):
        p50 = r["p50_added_ms"]
        low, high = r.get("p50_added_ci95_ms", [p50, p50])
        added.bar(x, p50, color="tab:blue")
        added.errorbar(x, p50, [[p50 - low], [high - p50]], color="k", capsize=6)
        added.hlines(target, x - 0.4, x + 0.4, colors="tab:red", linestyles="--", label="target" if x == 0 else None)
    added.set_xticks(range(len(measured)), [label for label, _, _ in measured])
    added.set(ylabel="ms", title="p50 added latency vs the library call (95% interval)")
    added.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
