"""The wrapper: one publish attempt, from manifest to commit."""
