"""Reserved for the agent and manager web console (queue, conversation, customer 360).

Nothing lives here yet; the console issue builds it. It may import crm_store,
channels and crm_settings, never bot/ or actions/.
"""
