"""The error every stage raises for a problem the user must fix.
"""

from __future__ import annotations


class LensfinderError(Exception):
    """A problem with the input or configuration that the user must fix.

    The message always names the file, row or key at fault and says what to do; the
    workflow prints it as it is, without a traceback.
    """
