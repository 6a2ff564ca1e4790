"""Domain exceptions raised by services; callers map them to user-facing messages."""


class StoreError(Exception):
    """Base class of every error a service raises on purpose."""

    default_message = "The request could not be completed."

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.default_message)


class NotFound(StoreError):
    """The requested record does not exist (or the caller may not know it does)."""

    default_message = "Not found."


class NotOwner(NotFound):
    """The record exists but belongs to another customer.

    Subclasses ``NotFound`` so that callers that only show "not found" leak nothing.
    """

    default_message = "Not found."


class InvalidInput(StoreError):
    """A value failed validation (bad channel, empty text, malformed cursor...)."""

    default_message = "Invalid input."
