"""The core: competition spec, store, scheduler, backends, leaderboard, CLI."""
