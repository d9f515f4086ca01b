"""Errors a user can cause. Each message says what is wrong and what to do, in one line."""


class DomainBedAlignError(Exception):
    """Base of every user-facing error; scripts print `error: <message>` and exit 2."""


class ConfigError(DomainBedAlignError, ValueError):
    """Bad argument or hyperparameter (unknown name, malformed JSON, index out of range)."""


class DataError(DomainBedAlignError):
    """Missing or malformed data on disk (data folder, domain folders, images, masks)."""


class TrainingError(DomainBedAlignError):
    """Training cannot go on (NaN loss); finished records stay intact."""


class StorageError(DomainBedAlignError):
    """A file could not be written (disk full, quota, read-only); files written before stay intact."""
