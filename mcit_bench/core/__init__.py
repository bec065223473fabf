"""The ground floor: records, boxes, errors, atomic files and hashing, the registry. Imports nothing
else of the project (an import-linter contract in pyproject.toml keeps it so)."""
