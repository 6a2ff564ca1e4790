"""Application wiring: settings, CLI, process supervisor and Rasa glue."""
