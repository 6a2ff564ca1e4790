"""The Rasa project itself: `rasa data validate` passes and the NLU data is varied."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import yaml

from tests.conftest import ROOT

NLU_DIR = ROOT / "data" / "nlu"
MIN_EXAMPLES = 25


def nlu_examples() -> dict[str, list[str]]:
    examples: dict[str, list[str]] = {}
    for path in sorted(Path(NLU_DIR).glob("*.yml")):
        for block in yaml.safe_load(path.read_text()).get("nlu", []):
            if "intent" in block:
                lines = [
                    line[2:].strip()
                    for line in block["examples"].splitlines()
                    if line.startswith("- ")
                ]
                examples.setdefault(block["intent"], []).extend(lines)
    return examples


def test_rasa_data_validate_passes():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rasa",
            "data",
            "validate",
            "--domain",
            "domain",
            "--data",
            "data/nlu",
            "data/rules.yml",
            "data/stories.yml",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert " ERROR " not in output, output[-3000:]


def test_every_intent_has_enough_distinct_examples():
    examples = nlu_examples()
    assert len(examples) >= 15
    thin = {
        intent: len(set(lines))
        for intent, lines in examples.items()
        if len(set(lines)) < MIN_EXAMPLES
    }
    assert thin == {}, f"intents with fewer than {MIN_EXAMPLES} examples: {thin}"


def test_no_example_is_listed_under_two_intents():
    owners: Counter[str] = Counter()
    for lines in nlu_examples().values():
        owners.update(
            {re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", s).lower() for s in lines}
        )
    clashes = [text for text, count in owners.items() if count > 1]
    assert clashes == []
