"""Leaderboards: building them from the store and rendering them."""
