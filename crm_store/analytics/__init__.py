"""Analytical CRM: RFM, customer lifetime value, value tiers, churn risk.

Reads orders and the contact history, writes one ``customer_scores`` row per
customer (``crm analytics refresh``). Readers (bot, handoff, console) use
:mod:`crm_store.analytics.service` and :mod:`crm_store.analytics.treatment`,
which only read that row.
"""
