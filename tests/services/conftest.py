from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker


@pytest.fixture()
def session(factory: sessionmaker) -> Iterator[Session]:
    """A session on the seeded demo store whose writes are rolled back."""
    with factory() as session:
        try:
            yield session
        finally:
            session.rollback()
