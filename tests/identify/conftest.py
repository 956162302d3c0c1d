"""The identify tests' shared fixture: ``tiny`` (identify_helpers.py), tiny models trained once a session."""

from identify_helpers import tiny  # noqa: F401
