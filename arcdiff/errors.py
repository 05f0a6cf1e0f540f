"""Errors a user can cause. The CLI prints each as one line and exits non-zero."""


class ArcdiffError(Exception):
    """Base class: a problem with the user's input, not a bug in arcdiff."""


class ConfigError(ArcdiffError):
    """A config file or --set override is malformed, mistyped or names an unknown key."""


class DataError(ArcdiffError):
    """A task source is missing, malformed, or holds an invalid grid."""


class CheckpointError(ArcdiffError):
    """A checkpoint is missing, unreadable, or does not match the model it is loaded into."""


class TrainingError(ArcdiffError):
    """Training cannot go on (for example, a run of non-finite losses); checkpoints are intact."""


class OutputError(ArcdiffError):
    """A run directory or output file cannot be written (disk full, read-only, not a folder)."""


class ResourceError(ArcdiffError):
    """The machine cannot do what was asked (out of memory, a device this torch lacks); the
    message names the setting to change."""
