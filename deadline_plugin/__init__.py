"""Deadline side."""
