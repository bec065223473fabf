"""The leaderboard: its file, submission checks, statistics over seeds, regression checks and the
views (tables, page, plots). Never imports torch, the engine or the models (an import-linter contract
keeps it so): what it needs of a run, the run recorded in its results."""
