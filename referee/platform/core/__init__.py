"""Core types at the bottom of every layer: errors, the competition spec, job and submission states,
predictions, tables and the leaderboard model. Nothing here imports the rest of referee."""
