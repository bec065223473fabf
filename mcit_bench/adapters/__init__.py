"""Adapter layers and the one helper that injects them into a model's target modules."""
