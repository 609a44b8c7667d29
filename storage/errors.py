"""Errors that carry a message meant for the user (printed as one line by the CLIs)."""


class SimshardError(Exception):
    """Base class: the message says what is wrong and what to do."""


class InputError(SimshardError, ValueError):
    """Bad input: a missing/corrupt file, a bad column, a bad parameter."""


class DataError(InputError):
    """A shard or validation file whose contents fail verification: a page checksum, NaN/inf values."""


class ManifestError(SimshardError):
    """A shard set whose manifest is missing, invalid or does not match its files."""


class TrainError(SimshardError):
    """A training run failed in its processes: a rank did not join, crashed, or lost the parameter server."""
