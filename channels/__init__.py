"""Channel-side helpers free of Rasa: channel names, signed identity assertions.

The channel connectors (Telegram, Twilio SMS and voice, e-mail) land here too.
"""
