"""The shipped leaderboard (leaderboard.json) and the results schema, installed as package data so
``mcit-bench leaderboard`` shows the board from any folder."""
