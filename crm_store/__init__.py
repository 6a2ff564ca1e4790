"""Shared customer store: models, migrations, services and analytics.

Nothing in this package imports Rasa, the channels or the console; they depend on it.
"""
