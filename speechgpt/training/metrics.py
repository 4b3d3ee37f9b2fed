"""metrics.jsonl (one JSON object per logged step or evaluation), its loss-curve PNG, and run.json (what a run
trained and how long its steps took)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class MetricsLog:
    def __init__(self, out: Path, enabled: bool = True, name: str = "metrics.jsonl") -> None:
        self.path = out / name
        self.enabled = enabled
        if enabled:
            out.mkdir(parents=True, exist_ok=True)

    def write(self, **fields: Any) -> None:
        if self.enabled:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(fields, sort_keys=True) + "\n")

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def train_seconds(self) -> float:
        """Seconds spent in optimizer steps over the whole run, resumed parts included: each logged step's time
        times the steps since the previous logged one (the last record of a step counts when a resumed run logged
        it again); evaluation, saving and start-up are not counted."""
        seconds: dict[int, float] = {}
        for record in self.records():
            if "seconds" in record and "step" in record:
                seconds[record["step"]] = record["seconds"]
        total, previous = 0.0, 0
        for step in sorted(seconds):
            total += seconds[step] * (step - previous)
            previous = step
        return round(total, 1)

    def write_run_info(self, model: Any, steps: int) -> Path | None:
        """run.json: parameters trained and in all, steps, and `train_seconds`."""
        if not self.enabled:
            return None
        sizes = [(getattr(p, "ds_numel", p.numel()), p.requires_grad) for p in model.parameters()]  # ZeRO-3: full size
        info = {
            "params_trained": sum(n for n, trained in sizes if trained),
            "params_total": sum(n for n, _ in sizes),
            "steps": steps,
            "train_seconds": self.train_seconds(),
        }
        path = self.path.with_name("run.json")
        path.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        return path

    def plot(self) -> Path | None:
        """loss_curve.png: the training loss and its named parts per step, and every evaluation loss."""
        if not self.enabled:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        records = self.records()
        fig, ax = plt.subplots(figsize=(7, 4))
        train = [(r["step"], r["loss"]) for r in records if "loss" in r]
        if train:
            ax.plot(*zip(*train, strict=True), label="train", lw=1)
        for key in sorted({k for r in records for k in r if k.startswith("loss/")}):  # named parts of the loss
            points = [(r["step"], r[key]) for r in records if key in r]
            ax.plot(*zip(*points, strict=True), label="train " + key.removeprefix("loss/"), lw=1, alpha=0.7)
        for key in sorted({k for r in records for k in r if k.startswith("eval/") and not k.endswith("/ppl")}):
            points = [(r["step"], r[key]) for r in records if key in r]
            ax.plot(*zip(*points, strict=True), marker="o", ms=3, label=key.removeprefix("eval/"))
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = self.path.with_name("loss_curve.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path
