"""An independent re-statement of BEiT's block-wise masking, used as a test oracle.

Written from the algorithm's description (MODEL_SPEC §6.2; BEiT, Bao et al.
2021, Sec. 2.5 and Algorithm 1; microsoft/unilm ``beit/masking_generator.py``
is the published implementation) in a different style from the library code:
Python's ``random`` module, sets of cells instead of arrays. Tests compare
*distributions* (means, stop-short shares) with
:class:`vlbeit_keras.data.masking.BlockMaskGenerator`; the two use different
random streams, so draws are not compared one by one.
"""

import math
import random


def beit_reference_mask(rows, cols, target, min_area, seed, tries_per_round=10,
                        min_aspect=0.3):
    """Set of masked (row, col) cells for one draw."""
    rnd = random.Random(seed)
    lo_log, hi_log = math.log(min_aspect), math.log(1.0 / min_aspect)
    masked = set()
    while len(masked) < target:
        budget = target - len(masked)
        gained = 0
        for _ in range(tries_per_round):
            area = rnd.uniform(min_area, budget)  # uniform(a, b) also for a > b
            aspect = math.exp(rnd.uniform(lo_log, hi_log))
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if h >= rows or w >= cols:
                continue
            top = rnd.randint(0, rows - h)
            left = rnd.randint(0, cols - w)
            cells = {(r, c) for r in range(top, top + h) for c in range(left, left + w)}
            fresh = cells - masked
            if 0 < len(fresh) <= budget:
                masked |= fresh
                gained = len(fresh)
                break
        if gained == 0:
            break
    return masked
