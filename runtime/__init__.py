"""Process supervision: one way to start, watch and stop the bot's processes.

Used by ``crm run``, the end-to-end test harness and the latency benchmark.
"""
