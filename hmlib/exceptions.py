"""The errors hmlib raises on purpose.

Each says what is wrong and what to do about it, and is raised before any
expensive work starts. The command line prints the message without a
traceback and exits non-zero.
"""


class HmlibError(Exception):
    """Base class: an error the user can act on."""


class ParamsError(HmlibError):
    """The params YAML is unreadable, has unknown keys or wrong values."""


class DataError(HmlibError):
    """The data file is unreadable or does not fit the params."""


class FitError(HmlibError):
    """A model cannot be fitted to these data (e.g. no rows, no variation)."""


class StepFailed(HmlibError):
    """A notebook of the report failed; names the notebook and the cell."""


class ArtifactError(HmlibError):
    """A step artifact is absent, of another schema version, or does not match its record."""


class DataWarning(UserWarning):
    """The data are usable but not as expected (e.g. two rows for one patient's visit); the result says how they were used."""
