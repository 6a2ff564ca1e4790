"""Rasa custom actions: thin adapters from dialogue state to crm_store services."""
