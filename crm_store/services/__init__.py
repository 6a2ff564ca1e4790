"""Services: the only way in to the store. Keyword-only functions taking a session.

The caller owns the transaction (``with factory.begin() as session: ...``).
"""
