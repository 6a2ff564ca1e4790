"""NLU component: a complaint filed under small talk becomes ``complain``.

Venting ("worst service ever", "I'm absolutely livid") has no words of its own:
trained as an intent it is confused with every task (it cost 0.015 intent F1
in cross-validation) and, left out of training, it lands on ``stop_form``,
``affirm`` or ``start_return`` ("Alright!", a return nobody asked for). This
component runs after the classifiers and the ``FallbackClassifier``: when the
predicted intent is not a task (tasks handle complaints themselves, see
``actions/complaints.py``) and the complaint lexicon
(``crm_store.services.complaints``) reads the text as a complaint, the intent
becomes ``complain``. The trained ``complain`` intent covers explicit
complaint-making ("I want to file a complaint").
"""

from __future__ import annotations

from typing import Any

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.classifiers.classifier import IntentClassifier
from rasa.shared.nlu.constants import (
    INTENT,
    INTENT_NAME_KEY,
    INTENT_RANKING_KEY,
    PREDICTED_CONFIDENCE_KEY,
    TEXT,
)
from rasa.shared.nlu.training_data.message import Message

from crm_store.services.complaints import detect_complaint

COMPLAIN = "complain"
# Intents whose answer is not a task: a complaint read there is answered as one.
OVERRIDABLE = frozenset(
    {
        "nlu_fallback",
        "out_of_scope",
        "faq",
        "affirm",
        "deny",
        "stop_form",
        "greet",
        "goodbye",
        "thanks",
        "bot_challenge",
    }
)


@DefaultV1Recipe.register(
    DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER, is_trainable=False
)
class ComplaintIntent(GraphComponent, IntentClassifier):
    """Turn a non-task intent into ``complain`` when the lexicon reads a complaint."""

    @classmethod
    def required_components(cls) -> list[type]:
        """Runs after an intent classifier."""
        return [IntentClassifier]

    @classmethod
    def create(
        cls,
        config: dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> ComplaintIntent:
        """Create the component (no configuration, nothing to train)."""
        return cls()

    def process(self, messages: list[Message]) -> list[Message]:
        """Relabel the complaints among ``messages``; leave everything else alone."""
        for message in messages:
            intent = message.get(INTENT) or {}
            if intent.get(INTENT_NAME_KEY) not in OVERRIDABLE:
                continue
            if detect_complaint(message.get(TEXT)) is None:
                continue
            confidence = max(float(intent.get(PREDICTED_CONFIDENCE_KEY) or 0.0), 0.9)
            relabelled = {
                INTENT_NAME_KEY: COMPLAIN,
                PREDICTED_CONFIDENCE_KEY: confidence,
            }
            message.set(INTENT, relabelled, add_to_output=True)
            ranking = [
                r
                for r in message.get(INTENT_RANKING_KEY) or []
                if r.get(INTENT_NAME_KEY) != COMPLAIN
            ]
            message.set(
                INTENT_RANKING_KEY, [dict(relabelled), *ranking], add_to_output=True
            )
        return messages
