"""Complaint detectors on the labelled sets in ``data/eval/``: precision and recall.

Candidates:
- ``lexicon``: ``crm_store.services.complaints.detect_complaint`` (what the bot uses);
- ``intent``: the trained model's intent is ``complain`` (needs ``--model``);
- ``lexicon+intent``: either one (what the bot uses when a model is given);
- ``vader``: VADER compound score <= -0.05, the usual threshold (only when the
  ``vaderSentiment`` package is installed; it is not a project dependency).

Writes a table and ``bench/results/complaints.json``.
"""

from __future__ import annotations

import asyncio
import json
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from crm_store.services.complaints import detect_complaint

ROOT = Path(__file__).resolve().parents[1]
EVAL_DIR = ROOT / "data" / "eval"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
SETS = ("complaints-dev.yml", "complaints-test.yml", "complaints-holdout.yml")
VADER_THRESHOLD = -0.05

Detector = Callable[[list[str]], list[bool]]


def load_set(path: Path) -> list[dict[str, Any]]:
    """The labelled messages of one set (``text``, ``complaint``, ``problem``)."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))["messages"]


def scores(predicted: list[bool], wanted: list[bool]) -> dict[str, float]:
    """Precision, recall, F1 and accuracy of ``predicted`` against ``wanted``."""
    tp = sum(1 for p, w in zip(predicted, wanted, strict=True) if p and w)
    fp = sum(1 for p, w in zip(predicted, wanted, strict=True) if p and not w)
    fn = sum(1 for p, w in zip(predicted, wanted, strict=True) if not p and w)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    correct = sum(1 for p, w in zip(predicted, wanted, strict=True) if p == w)
    return {
        "precision": round(precision, 3),
        "recall": round(recall, 3),
        "f1": round(f1, 3),
        "accuracy": round(correct / len(wanted), 3),
    }


def lexicon(texts: list[str]) -> list[bool]:
    """Our detector."""
    return [detect_complaint(t) is not None for t in texts]


def vader_detector() -> Detector | None:
    """VADER at its usual threshold, or None when the package is missing."""
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError:
        return None
    analyzer = SentimentIntensityAnalyzer()

    def detect(texts: list[str]) -> list[bool]:
        return [
            analyzer.polarity_scores(t)["compound"] <= VADER_THRESHOLD for t in texts
        ]

    return detect


def intent_detector(model: Path) -> Detector:
    """The trained model's intent classifier: ``complain`` or not."""
    from rasa.core.agent import Agent

    agent = Agent.load(str(model))

    def detect(texts: list[str]) -> list[bool]:
        async def parse_all() -> list[bool]:
            out = []
            for text in texts:
                parsed = await agent.parse_message(text)
                out.append((parsed.get("intent") or {}).get("name") == "complain")
            return out

        return asyncio.run(parse_all())

    return detect


def run_complaints_bench(model: Path | None, console: Console) -> dict[str, Any]:
    """Score every available detector on every set; print a table, write JSON."""
    detectors: dict[str, Detector] = {"lexicon": lexicon}
    vader = vader_detector()
    if vader is not None:
        detectors["vader"] = vader
    if model is not None:
        console.print(f"loading {model} ...")
        intent = intent_detector(model)
        detectors["intent"] = intent
    results: dict[str, Any] = {
        "python": platform.python_version(),
        "model": model.name if model else None,
        "vader_installed": vader is not None,
        "sets": {},
    }
    for name in SETS:
        messages = load_set(EVAL_DIR / name)
        texts = [m["text"] for m in messages]
        wanted = [bool(m["complaint"]) for m in messages]
        predicted = {key: detect(texts) for key, detect in detectors.items()}
        if "intent" in predicted:
            predicted["lexicon+intent"] = [
                a or b
                for a, b in zip(predicted["lexicon"], predicted["intent"], strict=True)
            ]
        results["sets"][name] = {
            "messages": len(messages),
            "complaints": sum(wanted),
            "detectors": {k: scores(v, wanted) for k, v in predicted.items()},
        }
    table = Table(title="Complaint detectors (precision / recall / F1)")
    table.add_column("set")
    keys = list(next(iter(results["sets"].values()))["detectors"])
    for key in keys:
        table.add_column(key, justify="right")
    for name, data in results["sets"].items():
        row = [name.removeprefix("complaints-").removesuffix(".yml")]
        for key in keys:
            s = data["detectors"][key]
            row.append(f"{s['precision']:.2f} / {s['recall']:.2f} / {s['f1']:.2f}")
        table.add_row(*row)
    console.print(table)
    if vader is None:
        console.print("vader: not installed (pip install vaderSentiment to compare)")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / "complaints.json"
    path.write_text(json.dumps(results, indent=2), encoding="utf-8")
    console.print(f"wrote {path.relative_to(ROOT)}")
    return results
