"""The contact-history pipeline: turn Rasa tracker events into store rows.

Free of Rasa imports: the broker in ``bot.broker`` hands plain event dicts to the
writer here, which records them through ``crm_store`` services.
"""
