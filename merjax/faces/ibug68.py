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
