"""Profile questions: show a verified customer the contact details on file, masked."""

from __future__ import annotations

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.common import reset_task, verified_task
from actions.store import in_store
from crm_store.errors import NotFound
from crm_store.services.customers import contact_on_file

NOT_ON_FILE = "none on file"


class ActionShowContact(Action):
    """After verification: e-mail, phone and postcode on file; how to change them."""

    def name(self) -> str:  # noqa: D102
        return "action_show_contact"

    @verified_task()
    async def run(  # noqa: D102
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        try:
            details = await in_store(
                contact_on_file, customer_id=tracker.get_slot("customer_id")
            )
        except NotFound:
            return reset_task()
        dispatcher.utter_message(
            response="utter_contact_on_file",
            email=details.email or NOT_ON_FILE,
            phone=details.phone or NOT_ON_FILE,
            postcode=details.postcode or NOT_ON_FILE,
            telegram="linked" if details.telegram_linked else "not linked",
        )
        return reset_task(resolved=True)
