"""Exceptions sejax raises for bad input: each message names the file or config key at fault."""


class SejaxError(Exception):
    """Base class: a problem the user can fix (bad data, bad config, bad checkpoint)."""


class DataError(SejaxError):
    """Unreadable, corrupt, misnamed or missing data; prepared shards that do not match."""


class ConfigError(SejaxError):
    """An unknown config key, a value of the wrong type, or an impossible value."""


class CheckpointError(SejaxError):
    """A checkpoint that is missing, incomplete or does not match the run."""
