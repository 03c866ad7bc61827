"""The exception for mistakes a user can fix: a bad config value, file, key or data.

Its message is one line that names the value, file or key and says what to do.
The command lines (``experiments/cli.py``, ``datasets.build``) print it as that
one line and exit with status 2, without a traceback unless asked for
(``--verbose`` or ``MERJAX_VERBOSE=1``). It subclasses ``ValueError`` so that
callers catching ``ValueError`` keep working.
"""

from __future__ import annotations


class UserError(ValueError):
    """A user's mistake, described in one actionable line."""
