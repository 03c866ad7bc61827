"""The iBUG 300-W 68-point markup: its size, its landmark groups and its mirror permutation.

Every landmark array in merjax ([..., 68, 2], (x, y) pixels) uses this 0-based
order, the one of dlib's shape predictor and of 2D-FAN. "Right" and "left" are
the subject's: the right eye (36-41) is on the image's left in a frontal face.

=============  ========  ===========================================
group          indices   what
=============  ========  ===========================================
``JAW``        0-16      jaw line, from the right ear to the left; 8 is the chin
``RIGHT_BROW`` 17-21     right brow, outer end (17) to inner end (21)
``LEFT_BROW``  22-26     left brow, inner end (22) to outer end (26)
``NOSE_BRIDGE`` 27-30    bridge, top (27, between the eyes) to tip (30)
``NOSTRILS``   31-35     the nose's base, right wing (31) to left wing (35); 33 is below the tip
``RIGHT_EYE``  36-41     right eye, outer corner 36, inner corner 39
``LEFT_EYE``   42-47     left eye, inner corner 42, outer corner 45
``OUTER_LIP``  48-59     outer lip, right corner 48, left corner 54
``INNER_LIP``  60-67     inner lip
=============  ========  ===========================================

``MIRROR_PERMUTATION`` renumbers the points of a horizontally flipped face so
that it is again a face in this order: after ``x -> W - 1 - x``,
``points[MIRROR_PERMUTATION]`` has the (new) right eye's outer corner at 36.
"""

from __future__ import annotations

import numpy as np

NUM_LANDMARKS = 68

JAW = tuple(range(0, 17))
RIGHT_BROW = tuple(range(17, 22))
LEFT_BROW = tuple(range(22, 27))
NOSE_BRIDGE = tuple(range(27, 31))
NOSTRILS = tuple(range(31, 36))
RIGHT_EYE = tuple(range(36, 42))
LEFT_EYE = tuple(range(42, 48))
OUTER_LIP = tuple(range(48, 60))
INNER_LIP = tuple(range(60, 68))


def _mirror_permutation() -> np.ndarray:
    """Index permutation that swaps the left and right points of the markup."""
    pairs = (
        [(i, 16 - i) for i in range(8)]                                    # jaw 0..16, 8 is the chin
        + [(17 + i, 26 - i) for i in range(5)]                             # brows
        + [(31, 35), (32, 34)]                                             # nose base; bridge 27..30 and 33 stay
        + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]     # eyes
        + [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]               # outer lips; 51, 57 stay
        + [(60, 64), (61, 63), (65, 67)]                                   # inner lips; 62, 66 stay
    )
    permutation = np.arange(NUM_LANDMARKS)
    for left, right in pairs:
        permutation[left], permutation[right] = right, left
    permutation.setflags(write=False)
    return permutation


MIRROR_PERMUTATION = _mirror_permutation()
