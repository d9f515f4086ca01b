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


def one_line(e: BaseException) -> str:
    """The user-facing line of an error, also when a DataLoader worker wrapped it in a traceback."""
    last = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
    prefix = f"{type(e).__module__}.{type(e).__name__}: "
    return last[len(prefix):] if last.startswith(prefix) else last
