"""The results document (a pydantic model, validated when written and when read), the one scoring of
a run's saved predictions into every matrix, and how results print. Never imports torch, the engine
or the models (an import-linter contract keeps it so)."""
