"""Block-wise image masking (BEiT) and BERT-style text masking, fixed-size outputs.

Image: :class:`BlockMaskGenerator` follows BEiT's ``MaskingGenerator``
(microsoft/unilm ``beit/masking_generator.py``; MODEL_SPEC §6.2). Text:
:class:`TextMasker` follows the contract of keras-hub's
``MaskedLMMaskGenerator`` (BERT 80/10/10; MODEL_SPEC §6.1) with stateless,
per-example seeds. Both emit fixed-length position lists plus 0/1 weights, so
a JAX train step compiles once:

- image: ``patch_mask`` bool (N,), ``image_mask_positions`` int32 (P,),
  ``image_mask_weights`` float32 (P,), P = the target count K;
- text: ``token_ids`` (corrupted), ``mask_positions`` int32 (P,),
  ``mask_ids`` int32 (P,) (the original ids, i.e. the targets) and
  ``mask_weights`` float32 (P,).

Padding entries have position 0, id 0 and weight 0.
"""

import dataclasses
import math

import numpy as np
import tensorflow as tf

from vlbeit_keras.data.image_preprocessing import image_size_pair

BEIT_MIN_NUM_PATCHES = 16  # BEiT pretraining: --min_mask_patches_per_block 16
BEIT_REFERENCE_PATCHES = 196  # ... for its 14 x 14 grid


def default_min_num_patches(grid_size):
    """BEiT's minimum block size (16 patches at 14x14), scaled with the grid area.

    ``max(1, round(16 * N / 196))`` for grids smaller than 196 patches, 16
    otherwise: 12 for a 6x25 grid (150 patches), 1 for a 4x4 grid.
    """
    height, width = image_size_pair(grid_size, "grid_size")
    num_patches = height * width
    if num_patches >= BEIT_REFERENCE_PATCHES:
        return BEIT_MIN_NUM_PATCHES
    return max(1, int(round(BEIT_MIN_NUM_PATCHES * num_patches / BEIT_REFERENCE_PATCHES)))


@dataclasses.dataclass(frozen=True)
class MaskBlock:
    """One block accepted by :class:`BlockMaskGenerator` (for statistics and tests).

    Attributes:
        top, left: int, the block's top-left patch (row, column).
        height, width: int, block size in patches.
        target_area: float, the area drawn for this block, in patches.
        min_area: float, the lower bound the draw used:
            ``min(min_num_patches, remaining)``.
        new_patches: int, patches this block masked that were not masked before.
        remaining: int, patches still to mask before this block (its budget).
    """

    top: int
    left: int
    height: int
    width: int
    target_area: float
    min_area: float
    new_patches: int
    remaining: int


class BlockMaskGenerator:
    """BEiT block-wise masking over an (Hp, Wp) patch grid.

    Repeats rounds until ``num_masking_patches`` (K) patches are masked or a
    round adds nothing. A round makes up to ``max_attempts`` tries: draw a
    target area uniformly between ``min_num_patches`` and the remaining budget
    (capped by ``max_num_patches``; when the budget is smaller than the minimum
    the draw is between the two, as ``random.uniform(a, b)`` does with a > b in
    the reference), an aspect ratio log-uniformly in [``min_aspect``,
    ``max_aspect``], h = round(sqrt(area * ratio)), w = round(sqrt(area /
    ratio)); the block must be strictly smaller than the grid on both sides;
    draw its top-left corner uniformly; accept it if it masks between 1 and
    ``remaining`` new patches. The first accepted try ends the round.

    So the generator **never overshoots and can stop short of K** (BEiT
    reference: ``beit/masking_generator.py``; MODEL_SPEC §6.2). "Minimum block
    size" means the drawn target area: rounding h and w and overlap with
    earlier blocks let a block add fewer new patches than the minimum. Each
    accepted block is recorded as a :class:`MaskBlock`.

    Args:
        grid_size: int or (Hp, Wp), the patch grid (non-square allowed).
        num_masking_patches: int K, the target count. Default
            ``round(mask_ratio * Hp * Wp)``. BEiT uses 75 of 196.
        mask_ratio: float, used when ``num_masking_patches`` is None.
        min_num_patches: int, minimum target area of a block. Default
            :func:`default_min_num_patches` (16 at >= 196 patches, scaled down
            for small grids).
        max_num_patches: int or None, maximum target area of a block (None:
            K, as BEiT).
        min_aspect: float, lower aspect-ratio bound (0.3).
        max_aspect: float or None, upper bound (None: 1 / min_aspect).
        max_attempts: int, tries per round (10).

    Raises:
        ValueError: a field is out of range (the message names it).

    Example:
    ```python
    gen = BlockMaskGenerator((14, 14), num_masking_patches=75, min_num_patches=16)
    mask = gen(np.random.default_rng(0))          # bool (14, 14)
    out = gen.sample(seed=0)                      # fixed-size dict, see `sample`
    ```
    """

    def __init__(
        self,
        grid_size,
        num_masking_patches=None,
        mask_ratio=0.4,
        min_num_patches=None,
        max_num_patches=None,
        min_aspect=0.3,
        max_aspect=None,
        max_attempts=10,
    ):
        self.grid_size = image_size_pair(grid_size, "grid_size")
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        if num_masking_patches is None:
            if not 0.0 < mask_ratio < 1.0:
                raise ValueError(f"`mask_ratio` must be in (0, 1); received {mask_ratio!r}.")
            num_masking_patches = int(round(mask_ratio * self.num_patches))
        if not 0 < int(num_masking_patches) < self.num_patches:
            raise ValueError(
                f"`num_masking_patches` must be in [1, {self.num_patches - 1}] for a "
                f"{self.grid_size[0]}x{self.grid_size[1]} grid; received {num_masking_patches!r}."
            )
        self.num_masking_patches = int(num_masking_patches)
        if min_num_patches is None:
            min_num_patches = default_min_num_patches(self.grid_size)
        if min_num_patches < 1:
            raise ValueError(f"`min_num_patches` must be >= 1; received {min_num_patches!r}.")
        self.min_num_patches = min_num_patches
        self.max_num_patches = (
            self.num_masking_patches if max_num_patches is None else int(max_num_patches)
        )
        if not 0.0 < min_aspect <= 1.0:
            raise ValueError(f"`min_aspect` must be in (0, 1]; received {min_aspect!r}.")
        max_aspect = max_aspect or 1.0 / min_aspect
        self.min_aspect, self.max_aspect = float(min_aspect), float(max_aspect)
        self.log_aspect_range = (math.log(min_aspect), math.log(max_aspect))
        if max_attempts < 1:
            raise ValueError(f"`max_attempts` must be >= 1; received {max_attempts!r}.")
        self.max_attempts = int(max_attempts)

    @property
    def num_positions(self):
        """P, the length of the fixed-size position list (= K)."""
        return self.num_masking_patches

    def get_config(self):
        return {
            "grid_size": self.grid_size,
            "num_masking_patches": self.num_masking_patches,
            "min_num_patches": self.min_num_patches,
            "max_num_patches": self.max_num_patches,
            "min_aspect": self.min_aspect,
            "max_aspect": self.max_aspect,
            "max_attempts": self.max_attempts,
        }

    def __repr__(self):
        return f"BlockMaskGenerator({self.get_config()})"

    def _round(self, mask, budget, rng, blocks):
        """One round: up to ``max_attempts`` tries; returns the patches added."""
        grid_h, grid_w = self.grid_size
        low, high = sorted((float(self.min_num_patches), float(budget)))
        for _ in range(self.max_attempts):
            area = low + (high - low) * rng.random()
            ratio = math.exp(rng.uniform(*self.log_aspect_range))
            h = int(round(math.sqrt(area * ratio)))
            w = int(round(math.sqrt(area / ratio)))
            if not (h < grid_h and w < grid_w):
                continue
            top = int(rng.integers(0, grid_h - h + 1))
            left = int(rng.integers(0, grid_w - w + 1))
            window = mask[top:top + h, left:left + w]
            added = h * w - int(window.sum())
            if 0 < added <= budget:
                window[...] = True
                blocks.append(MaskBlock(top, left, h, w, area, low, added, budget))
                return added
        return 0

    def __call__(self, rng=None, return_blocks=False):
        """Draw one mask.

        Args:
            rng: ``numpy.random.Generator``, an int seed, or None (fresh entropy).
            return_blocks: also return the accepted blocks.

        Returns:
            bool ndarray (Hp, Wp), True = masked; with ``return_blocks``, a
            tuple (mask, list of :class:`MaskBlock`). ``mask.sum() <= K``.
        """
        rng = np.random.default_rng(rng)
        mask = np.zeros(self.grid_size, dtype=bool)
        blocks = []
        count = 0
        while count < self.num_masking_patches:
            budget = min(self.num_masking_patches - count, self.max_num_patches)
            added = self._round(mask, budget, rng, blocks)
            if added == 0:
                break
            count += added
        return (mask, blocks) if return_blocks else mask

    def sample(self, seed=None):
        """One mask in the fixed-size layout the pretraining batches use.

        Args:
            seed: anything ``numpy.random.default_rng`` accepts (an int, a
                tuple of ints) or a Generator.

        Returns:
            dict of NumPy arrays: ``patch_mask`` bool (N,) (row-major over the
            grid), ``image_mask_positions`` int32 (P,) (masked patch indices
            0..N-1, ascending, then 0-padding), ``image_mask_weights`` float32
            (P,) (1 for real entries, 0 for padding); P = K.
        """
        mask = self(seed).reshape(-1)
        return mask_to_positions(mask, self.num_positions, prefix="image_")

    def tf_sample(self, seed):
        """:meth:`sample` as a tf.data op (``tf.numpy_function``).

        Args:
            seed: int64 tensor (k,), e.g. (pipeline seed, stream, element).

        Returns:
            dict of tensors with static shapes: ``patch_mask`` bool (N,),
            ``image_mask_positions`` int32 (P,), ``image_mask_weights``
            float32 (P,).
        """

        def draw(seed_values):
            out = self.sample(tuple(int(v) for v in seed_values))
            return out["patch_mask"], out["image_mask_positions"], out["image_mask_weights"]

        mask, positions, weights = tf.numpy_function(
            draw, [tf.cast(seed, tf.int64)], [tf.bool, tf.int32, tf.float32], stateful=False
        )
        mask.set_shape([self.num_patches])
        positions.set_shape([self.num_positions])
        weights.set_shape([self.num_positions])
        return {
            "patch_mask": mask,
            "image_mask_positions": positions,
            "image_mask_weights": weights,
        }


def mask_to_positions(mask, num_positions, prefix=""):
    """Bool mask (N,) -> fixed-size ``{prefix}mask_positions`` / ``{prefix}mask_weights``.

    Args:
        mask: bool array (N,).
        num_positions: int P; ``mask.sum()`` must not exceed it.
        prefix: key prefix, e.g. ``"image_"``.

    Returns:
        dict: ``patch_mask`` bool (N,), ``{prefix}mask_positions`` int32 (P,),
        ``{prefix}mask_weights`` float32 (P,).

    Raises:
        ValueError: more than P entries are masked.
    """
    mask = np.asarray(mask, dtype=bool).reshape(-1)
    idx = np.flatnonzero(mask).astype(np.int32)
    if idx.size > num_positions:
        raise ValueError(f"{idx.size} masked entries exceed num_positions={num_positions}.")
    positions = np.zeros(num_positions, np.int32)
    weights = np.zeros(num_positions, np.float32)
    positions[: idx.size] = idx
    weights[: idx.size] = 1.0
    return {
        "patch_mask": mask,
        f"{prefix}mask_positions": positions,
        f"{prefix}mask_weights": weights,
    }


COUNT_RULES = ("stochastic", "ceil", "round")


class TextMasker:
    """BERT masking with per-example stateless seeds and fixed-size outputs.

    Same arguments and outputs as keras-hub's
    ``keras_hub.layers.MaskedLMMaskGenerator`` (BERT, Devlin et al. 2019,
    Sec. 3.1; MODEL_SPEC §6.1): select a share ``mask_selection_rate`` of the
    selectable tokens (never ``unselectable_token_ids``: [CLS], [SEP], [PAD]),
    replace a selected token by ``mask_token_id`` with probability
    ``mask_token_rate``, by a uniformly random id in [0, vocabulary_size) with
    probability ``random_token_rate``, else keep it.

    Why not call ``MaskedLMMaskGenerator`` itself: on the tf.data path it
    draws from TensorFlow's global stateful RNG (tensorflow-text
    ``RandomItemSelector`` / ``MaskValuesChooser``), so its masks depend on
    thread scheduling under a parallel ``map`` and cannot be replayed when a
    run resumes mid-epoch. This class takes a seed per call (built from the
    pipeline seed and the example's stream position) and uses stateless ops
    only. ``count_rule="ceil"`` reproduces keras-hub's TF-path count exactly
    (``tests/data/test_masking.py`` checks it against the library).

    Count rules (n = number of selectable tokens, P = mask_selection_length):

    - ``"stochastic"`` (default): floor(rate * n + u), u ~ U[0, 1): the
      expected count is exactly rate * n, so short texts (40-token pairs at
      50%) hit the ratio on average; may select 0 tokens in a very short text.
    - ``"ceil"``: ceil(rate * n) (tensorflow-text / keras-hub); overshoots the
      ratio by up to one token per text.
    - ``"round"``: max(1, round(rate * n)) (the original BERT script).

    The count is capped at P. Selected positions come out ascending.

    Args:
        vocabulary_size: int, random replacement ids are drawn from [0, V).
        mask_selection_rate: float in (0, 1]: 0.15 for MLM, 0.5 for MVLM text.
        mask_token_id: int, the [MASK] id.
        mask_selection_length: int P <= sequence length, the fixed output length.
            Default ``ceil(rate * sequence_length)`` at the first call.
        unselectable_token_ids: ids never selected ([CLS], [SEP], [PAD], ...).
        mask_token_rate, random_token_rate: floats, 0.8 and 0.1 (BERT).
        count_rule: one of ``"stochastic"``, ``"ceil"``, ``"round"``.

    Raises:
        ValueError: a field is out of range.
    """

    def __init__(
        self,
        vocabulary_size,
        mask_selection_rate,
        mask_token_id,
        mask_selection_length=None,
        unselectable_token_ids=(0,),
        mask_token_rate=0.8,
        random_token_rate=0.1,
        count_rule="stochastic",
    ):
        if not 0.0 < mask_selection_rate <= 1.0:
            raise ValueError(
                f"`mask_selection_rate` must be in (0, 1]; received {mask_selection_rate!r}."
            )
        if not 0 <= mask_token_id < vocabulary_size:
            raise ValueError(
                f"`mask_token_id` must be in [0, {vocabulary_size}); received {mask_token_id!r}."
            )
        if mask_token_rate < 0 or random_token_rate < 0 or mask_token_rate + random_token_rate > 1:
            raise ValueError(
                "`mask_token_rate` and `random_token_rate` must be >= 0 with a sum <= 1; "
                f"received {mask_token_rate!r} and {random_token_rate!r}."
            )
        if count_rule not in COUNT_RULES:
            raise ValueError(f"`count_rule` must be one of {COUNT_RULES}; received {count_rule!r}.")
        self.vocabulary_size = int(vocabulary_size)
        self.mask_selection_rate = float(mask_selection_rate)
        self.mask_token_id = int(mask_token_id)
        self.mask_selection_length = mask_selection_length
        self.unselectable_token_ids = tuple(int(i) for i in unselectable_token_ids)
        self.mask_token_rate = float(mask_token_rate)
        self.random_token_rate = float(random_token_rate)
        self.count_rule = count_rule

    def get_config(self):
        return {
            "vocabulary_size": self.vocabulary_size,
            "mask_selection_rate": self.mask_selection_rate,
            "mask_token_id": self.mask_token_id,
            "mask_selection_length": self.mask_selection_length,
            "unselectable_token_ids": list(self.unselectable_token_ids),
            "mask_token_rate": self.mask_token_rate,
            "random_token_rate": self.random_token_rate,
            "count_rule": self.count_rule,
        }

    def num_positions(self, sequence_length):
        """P for a sequence length: ``mask_selection_length`` or ceil(rate * length)."""
        if self.mask_selection_length is not None:
            return int(self.mask_selection_length)
        return int(math.ceil(self.mask_selection_rate * sequence_length))

    def __call__(self, token_ids, seed):
        """Mask one sequence (T,) or a batch (B, T).

        Args:
            token_ids: int tensor (T,) or (B, T) with a static T.
            seed: int tensor (2,), the stateless seed (one per call; rows of
                a batch get different draws).

        Returns:
            dict of tensors, leading batch axis as the input:
            ``token_ids`` int32 (.., T), corrupted; ``mask_positions`` int32
            (.., P); ``mask_ids`` int32 (.., P), the original ids (targets);
            ``mask_weights`` float32 (.., P).

        Raises:
            ValueError: T is not static, or P > T.
        """
        token_ids = tf.cast(tf.convert_to_tensor(token_ids), tf.int32)
        unbatched = token_ids.shape.rank == 1
        if unbatched:
            token_ids = token_ids[tf.newaxis]
        length = token_ids.shape[-1]
        if length is None:
            raise ValueError("TextMasker needs a static sequence length (pad to a fixed T).")
        num_pos = self.num_positions(length)
        if num_pos > length:
            raise ValueError(
                f"mask_selection_length={num_pos} exceeds the sequence length {length}."
            )
        batch = tf.shape(token_ids)[0]
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)

        selectable = tf.ones_like(token_ids, tf.bool)
        for special in self.unselectable_token_ids:
            selectable &= tf.not_equal(token_ids, special)
        n = tf.reduce_sum(tf.cast(selectable, tf.float32), axis=-1)
        raw = self.mask_selection_rate * n
        if self.count_rule == "stochastic":
            u = tf.random.stateless_uniform([batch], seeds[0])
            count = tf.floor(raw + u)
        elif self.count_rule == "ceil":
            count = tf.math.ceil(raw)
        else:
            count = tf.minimum(tf.maximum(tf.round(raw), 1.0), n)
        count = tf.cast(tf.minimum(count, float(num_pos)), tf.int32)  # (B,)

        # A random permutation of the selectable positions, via top-k on keys.
        keys = tf.random.stateless_uniform(tf.shape(token_ids), seeds[1])
        keys = tf.where(selectable, keys, -1.0)
        _, order = tf.math.top_k(keys, k=num_pos)  # (B, P), selectable first
        valid = tf.range(num_pos)[tf.newaxis] < count[:, tf.newaxis]  # (B, P)
        # Ascending positions, padding entries last.
        positions = tf.sort(tf.where(valid, order, length), axis=-1)
        valid = positions < length
        positions = tf.where(valid, positions, 0)
        original = tf.gather(token_ids, positions, batch_dims=1)

        r = tf.random.stateless_uniform([batch, num_pos], seeds[2])
        random_ids = tf.random.stateless_uniform(
            [batch, num_pos], seeds[3], minval=0, maxval=self.vocabulary_size, dtype=tf.int32
        )
        new_values = tf.where(
            r < self.mask_token_rate,
            self.mask_token_id,
            tf.where(r < self.mask_token_rate + self.random_token_rate, random_ids, original),
        )
        onehot = tf.one_hot(positions, length, dtype=tf.int32) * tf.cast(valid, tf.int32)[..., None]
        replaced = tf.reduce_max(onehot, axis=1) > 0  # (B, T)
        values = tf.reduce_sum(onehot * new_values[..., None], axis=1)
        corrupted = tf.where(replaced, values, token_ids)

        weights = tf.cast(valid, tf.float32)
        out = {
            "token_ids": corrupted,
            "mask_positions": positions,
            "mask_ids": original * tf.cast(valid, tf.int32),
            "mask_weights": weights,
        }
        if unbatched:
            out = {k: v[0] for k, v in out.items()}
        return out
