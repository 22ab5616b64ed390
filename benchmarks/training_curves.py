"""Training curves of the shipped models, from the runs' metrics.jsonl, as JSON + PNG in benchmarks/results.

python -m benchmarks.training_curves [--runs runs] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks.harness import RESULTS, write_json

KINDS = ("made", "pixelcnnpp", "densenet", "rnn", "gru")  # runs/<kind>, as the manifest's training commands write
UNITS = {"made": "nats / image", "pixelcnnpp": "nats / dim", "densenet": "cross-entropy", "rnn": "MSE", "gru": "MSE"}


def read(path: Path) -> dict[str, Any]:
    epochs, settings = [], {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record["event"] == "epoch":
            epochs.append({k: record[k] for k in ("epoch", "train_loss", "val_loss", "seconds")})
        elif record["event"] == "start":
            settings = record["settings"]
    return {"settings": settings, "epochs": epochs}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    curves = {kind: read(args.runs / kind / "metrics.jsonl") for kind in KINDS
              if (args.runs / kind / "metrics.jsonl").exists()}  # fmt: skip
    path = write_json("training-curves", curves, args.out)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3.4), squeeze=False)
    for ax, (kind, curve) in zip(axes[0], curves.items(), strict=True):
        epochs = [e["epoch"] for e in curve["epochs"]]
        ax.plot(epochs, [e["train_loss"] for e in curve["epochs"]], label="train (running)")
        ax.plot(epochs, [e["val_loss"] for e in curve["epochs"]], label="validation")
        ax.set_title(kind)
        ax.set_xlabel("epoch")
        ax.set_ylabel(UNITS[kind])
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path.with_suffix(".png"), dpi=100)
    print(f"wrote {path} and {path.with_suffix('.png')}")


if __name__ == "__main__":
    main()
