"""A stand-in for the Deadline Monitor's UI package, for Monitor scripts under test (see Deadline/__init__.py)."""
