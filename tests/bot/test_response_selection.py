"""The intent-gated ResponseSelector, on a real selector trained in process.

A tiny NLU pipeline (Rasa's WhitespaceTokenizer, CountVectorsFeaturizer and
ResponseSelector with ``retrieval_intent: faq``, as in ``config.yml``) is trained
once per module on a few examples in a temporary model storage. Messages are
real Rasa ``Message`` objects, tokenized and featurized by that pipeline; their
intent is set as DIETClassifier (earlier in the real pipeline) would set it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from rasa.engine.graph import ExecutionContext, GraphSchema
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.engine.storage.resource import Resource
from rasa.nlu.featurizers.sparse_featurizer.count_vectors_featurizer import (
    CountVectorsFeaturizer,
)
from rasa.nlu.selectors.response_selector import ResponseSelector
from rasa.nlu.tokenizers.whitespace_tokenizer import WhitespaceTokenizer
from rasa.shared.nlu.training_data.formats.rasa_yaml import RasaYAMLReader
from rasa.shared.nlu.training_data.message import Message

from bot.patches.response_selection import gated_process, install_intent_gated_selection

STOCK = ResponseSelector.process
SELECTION = "response_selector"  # rasa.nlu.constants.RESPONSE_SELECTOR_PROPERTY_NAME
TRAINING_DATA = """
version: "3.1"
nlu:
- intent: faq/shipping
  examples: |
    - how much is shipping
    - what does delivery cost
    - shipping costs
- intent: faq/returns
  examples: |
    - can I return an item
    - how do returns work
    - what is your return policy
- intent: greet
  examples: |
    - hello
    - hi there
responses:
  utter_faq/shipping:
  - text: Shipping is free over 50 euros.
  utter_faq/returns:
  - text: You can return anything within 30 days.
"""


@dataclass
class Pipeline:
    """The trained components, and messages run through the featurizing part."""

    tokenizer: WhitespaceTokenizer
    featurizer: CountVectorsFeaturizer
    faq_selector: ResponseSelector
    default_selector: ResponseSelector

    def message(self, text: str, intent: str | None) -> Message:
        """A featurized message classified as ``intent`` (as DIET would set it)."""
        message = Message(data={"text": text})
        self.tokenizer.process([message])
        self.featurizer.process([message])
        if intent is not None:
            message.set("intent", {"name": intent, "confidence": 0.93})
        return message


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    storage = LocalModelStorage(Path(tmp_path_factory.mktemp("rs-model")))
    context = ExecutionContext(GraphSchema({}), "response-selection-test")

    def config(component: Any, **overrides: Any) -> dict[str, Any]:
        return {**component.get_default_config(), **overrides}

    def create(component: Any, name: str, **overrides: Any) -> Any:
        return component.create(
            config(component, **overrides), storage, Resource(name), context
        )

    data = RasaYAMLReader().reads(TRAINING_DATA)
    tokenizer = create(WhitespaceTokenizer, "tokenizer")
    featurizer = create(CountVectorsFeaturizer, "featurizer")
    tokenizer.process_training_data(data)
    featurizer.train(data)
    featurizer.process_training_data(data)
    settings = {"epochs": 5, "random_seed": 42, "constrain_similarities": True}
    selector = create(ResponseSelector, "selector", retrieval_intent="faq", **settings)
    selector.train(data)  # persists into the model storage
    # The same trained model loaded without a retrieval intent (Rasa's default key).
    default = ResponseSelector.load(
        config(ResponseSelector, retrieval_intent=None, **settings),
        storage,
        Resource("selector"),
        context,
    )
    return Pipeline(tokenizer, featurizer, selector, default)


@pytest.fixture()
def gated() -> Iterator[None]:
    ResponseSelector.process = STOCK  # type: ignore[method-assign]
    install_intent_gated_selection()
    install_intent_gated_selection()  # idempotent: must not wrap itself
    assert ResponseSelector.process is gated_process
    yield
    ResponseSelector.process = STOCK  # type: ignore[method-assign]


def test_stock_selector_predicts_for_every_message(pipeline: Pipeline) -> None:
    """What the patch avoids: Rasa's selector also runs for a greeting."""
    assert ResponseSelector.process is STOCK
    greeting = pipeline.message("hello", "greet")
    pipeline.faq_selector.process([greeting])
    assert "faq" in greeting.get(SELECTION)


def test_non_faq_messages_skip_the_selector(pipeline: Pipeline, gated: None) -> None:
    question = pipeline.message("how much does shipping cost", "faq")
    greeting = pipeline.message("hello", "greet")
    unclassified = pipeline.message("hello", None)
    messages = [greeting, question, unclassified]
    assert pipeline.faq_selector.process(messages) == messages
    assert greeting.get(SELECTION) is None
    assert unclassified.get(SELECTION) is None
    prediction = question.get(SELECTION)["faq"]["response"]
    assert prediction["intent_response_key"] == "faq/shipping"
    assert prediction["utter_action"] == "utter_faq/shipping"
    assert prediction["responses"] == [{"text": "Shipping is free over 50 euros."}]


def test_faq_prediction_is_rasas_own(pipeline: Pipeline) -> None:
    stock = pipeline.message("how do returns work", "faq")
    pipeline.faq_selector.process([stock])
    install_intent_gated_selection()
    try:
        ours = pipeline.message("how do returns work", "faq")
        pipeline.faq_selector.process([ours])
    finally:
        ResponseSelector.process = STOCK  # type: ignore[method-assign]
    assert ours.get(SELECTION) == stock.get(SELECTION)
    assert ours.get(SELECTION)["faq"]["response"]["intent_response_key"] == (
        "faq/returns"
    )


def test_selector_without_retrieval_intent_runs_for_every_message(
    pipeline: Pipeline, gated: None
) -> None:
    assert pipeline.default_selector.retrieval_intent is None
    greeting = pipeline.message("hello", "greet")
    pipeline.default_selector.process([greeting])
    assert "default" in greeting.get(SELECTION)
