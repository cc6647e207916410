"""Submission kinds, intake validation and storage."""
