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


class Conflict(StoreError):
    """The record is no longer in the state the request expects (lost a race)."""

    default_message = "The record was changed by someone else."


class Forbidden(StoreError):
    """The caller may not do this to the record (e.g. another agent's handoff)."""

    default_message = "Not allowed."


class LoginFailed(StoreError):
    """Unknown user, inactive user or wrong password: one message for all."""

    default_message = "Unknown username or wrong password."


class LoginThrottled(StoreError):
    """Too many failed logins for the username or the client address."""

    default_message = "Too many failed logins; try again later."

    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__(
            f"Too many failed logins; try again in {retry_after_seconds} seconds."
        )
        self.retry_after_seconds = retry_after_seconds
