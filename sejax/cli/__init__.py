"""The ``sejax`` command."""
