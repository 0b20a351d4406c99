"""Block-wise image masking (BEiT) and BERT text masking."""

import math
import pathlib
import sys

import numpy as np
import pytest
import tensorflow as tf

from vlbeit_keras.data.masking import BlockMaskGenerator
from vlbeit_keras.data.masking import TextMasker
from vlbeit_keras.data.masking import default_min_num_patches
from vlbeit_keras.data.masking import mask_to_positions

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from beit_oracle import beit_reference_mask  # noqa: E402

DRAWS = 1000


def _draw_stats(generator, seeds):
    counts, blocks = [], []
    for seed in seeds:
        mask, recorded = generator(seed, return_blocks=True)
        counts.append(int(mask.sum()))
        blocks.append(recorded)
        assert mask.dtype == bool and mask.shape == generator.grid_size
        # The blocks recorded account for every masked patch.
        assert sum(b.new_patches for b in recorded) == mask.sum()
    return np.array(counts), blocks


@pytest.mark.parametrize(
    "grid, target, min_block",
    [((14, 14), 75, 16),  # BEiT pretraining at 224 px
     ((6, 25), 60, 12),   # NLVR 96x400 at patch 16, 40 %
     ((4, 4), 6, 1)],     # tiny preset
)
def test_block_mask_statistics_match_beit(grid, target, min_block):
    generator = BlockMaskGenerator(grid, num_masking_patches=target, min_num_patches=min_block)
    counts, blocks = _draw_stats(generator, range(DRAWS))

    # Never over budget; every block respects the minimum target area.
    assert counts.max() <= target
    for recorded in blocks:
        for b in recorded:
            assert b.target_area >= b.min_area - 1e-9
            assert b.min_area == min(min_block, b.remaining)
            assert 0 < b.new_patches <= b.remaining
            assert b.height < grid[0] and b.width < grid[1]
            assert b.height * b.width >= b.new_patches
    # Rounding h, w can shrink a block below the drawn area, never much:
    # h * w >= area - (h + w) / 2 - 1/4 for rounded sides.
    shrunk = [b for r in blocks for b in r if b.height * b.width < b.min_area]
    share_shrunk = len(shrunk) / max(1, sum(len(r) for r in blocks))

    ref = np.array([
        len(beit_reference_mask(grid[0], grid[1], target, min_block, 10_000 + s))
        for s in range(DRAWS)
    ])
    short, ref_short = (counts < target).mean(), (ref < target).mean()
    print(
        f"\n{grid[0]}x{grid[1]} K={target} min={min_block}: ours mean {counts.mean():.2f} "
        f"(std {counts.std():.2f}), short of K in {100 * short:.1f}% | BEiT re-run mean "
        f"{ref.mean():.2f} (std {ref.std():.2f}), short in {100 * ref_short:.1f}% | blocks with "
        f"h*w below the minimum area: {100 * share_shrunk:.1f}%"
    )
    assert abs(counts.mean() - ref.mean()) < 0.6
    # Two proportions of 1,000 draws: 4 standard errors.
    se = math.sqrt(max(short * (1 - short) + ref_short * (1 - ref_short), 1e-4) / DRAWS)
    assert abs(short - ref_short) < 4 * se + 0.005
    assert counts.mean() > 0.9 * target


def test_block_mask_stops_short_in_a_sizable_share_at_224px():
    generator = BlockMaskGenerator((14, 14), num_masking_patches=75, min_num_patches=16)
    counts = np.array([generator(s).sum() for s in range(400)])
    assert 0.15 < (counts < 75).mean() < 0.5  # by design (BEiT reference)
    assert (counts == 75).mean() > 0.5


def test_block_mask_is_seeded():
    generator = BlockMaskGenerator((14, 14), mask_ratio=0.4)
    assert generator.num_masking_patches == round(0.4 * 196)
    assert np.array_equal(generator(3), generator(3))
    assert not np.array_equal(generator(3), generator(4))
    assert np.array_equal(generator.sample((1, 2, 3))["patch_mask"],
                          generator.sample((1, 2, 3))["patch_mask"])


def test_block_mask_masks_contiguous_blocks():
    """Block masks are blobby: most masked patches have a masked 4-neighbour."""
    generator = BlockMaskGenerator((14, 14), num_masking_patches=75, min_num_patches=16)
    neighbours = []
    for seed in range(50):
        mask = generator(seed)
        padded = np.pad(mask, 1)
        n = padded[:-2, 1:-1] | padded[2:, 1:-1] | padded[1:-1, :-2] | padded[1:-1, 2:]
        neighbours.append((n & mask).sum() / mask.sum())
    assert np.mean(neighbours) > 0.95


def test_fixed_size_positions_and_weights():
    generator = BlockMaskGenerator((6, 25), mask_ratio=0.4)
    out = generator.sample(0)
    mask, pos, w = out["patch_mask"], out["image_mask_positions"], out["image_mask_weights"]
    assert mask.shape == (150,) and mask.dtype == bool
    assert pos.shape == (60,) and pos.dtype == np.int32
    assert w.shape == (60,) and w.dtype == np.float32
    k = int(mask.sum())
    assert np.array_equal(pos[:k], np.flatnonzero(mask))
    assert np.all(w[:k] == 1) and np.all(w[k:] == 0) and np.all(pos[k:] == 0)


def test_tf_sample_static_shapes_and_determinism():
    generator = BlockMaskGenerator((4, 4), num_masking_patches=6)
    out = generator.tf_sample(tf.constant([1, 2, 3], tf.int64))
    assert out["patch_mask"].shape == (16,)
    assert out["image_mask_positions"].shape == (6,)
    again = generator.tf_sample(tf.constant([1, 2, 3], tf.int64))
    assert np.array_equal(out["patch_mask"].numpy(), again["patch_mask"].numpy())
    ref = generator.sample((1, 2, 3))
    assert np.array_equal(out["patch_mask"].numpy(), ref["patch_mask"])


def test_default_min_block_scales_with_grid():
    assert default_min_num_patches((14, 14)) == 16
    assert default_min_num_patches((24, 24)) == 16
    assert default_min_num_patches((6, 25)) == 12
    assert default_min_num_patches((4, 4)) == 1


def test_block_mask_rejects_bad_config():
    with pytest.raises(ValueError, match="num_masking_patches"):
        BlockMaskGenerator((4, 4), num_masking_patches=16)
    with pytest.raises(ValueError, match="min_aspect"):
        BlockMaskGenerator((4, 4), min_aspect=2.0)
    with pytest.raises(ValueError, match="exceed"):
        mask_to_positions(np.ones(5, bool), 3)


# ---------------------------------------------------------------------------
# Text masking
# ---------------------------------------------------------------------------

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
VOCAB = 100


def _batch(rng, n, length, min_len=3, max_len=None):
    """[CLS] w... [SEP] [PAD]... rows with random real lengths."""
    max_len = max_len or length - 2
    rows = np.zeros((n, length), np.int32)
    lengths = rng.integers(min_len, max_len + 1, size=n)
    for i, m in enumerate(lengths):
        rows[i, 0] = CLS
        rows[i, 1:m + 1] = rng.integers(5, VOCAB, size=m)
        rows[i, m + 1] = SEP
    return rows, lengths


def _masker(rate, length, **kwargs):
    return TextMasker(
        vocabulary_size=VOCAB, mask_selection_rate=rate, mask_token_id=MASK,
        mask_selection_length=math.ceil(rate * length),
        unselectable_token_ids=[PAD, CLS, SEP], **kwargs,
    )


@pytest.mark.parametrize("rate, length, min_len, max_len", [
    (0.15, 128, 20, 126),  # MLM on text-only inputs
    (0.5, 40, 4, 25),      # MVLM text on caption-length pairs
])
def test_text_mask_ratio_and_specials(rate, length, min_len, max_len):
    rng = np.random.default_rng(0)
    ids, lengths = _batch(rng, 1000, length, min_len, max_len)
    masker = _masker(rate, length)
    out = {k: v.numpy() for k, v in masker(ids, tf.constant([7, 8])).items()}
    weights = out["mask_weights"]
    selected = weights.sum(axis=1)
    ratio = selected.sum() / lengths.sum()
    print(f"\nrate {rate}, T={length}: masked share of real tokens {ratio:.4f}")
    assert abs(ratio - rate) < 0.01
    for i in range(len(ids)):
        k = int(selected[i])
        pos = out["mask_positions"][i, :k]
        assert np.all(np.diff(pos) > 0)  # ascending, unique
        assert np.all(ids[i, pos] >= 5)  # never [PAD]/[CLS]/[SEP]
        assert np.array_equal(out["mask_ids"][i, :k], ids[i, pos])  # targets = originals
        assert np.all(out["mask_positions"][i, k:] == 0) and np.all(out["mask_ids"][i, k:] == 0)
        unmasked = np.setdiff1d(np.arange(length), pos)
        assert np.array_equal(out["token_ids"][i, unmasked], ids[i, unmasked])


def test_text_mask_80_10_10():
    rng = np.random.default_rng(1)
    ids, _ = _batch(rng, 2000, 64, 30, 62)
    out = {k: v.numpy() for k, v in _masker(0.15, 64)(ids, tf.constant([1, 1])).items()}
    valid = out["mask_weights"] > 0
    rows = np.nonzero(valid)[0]
    new = out["token_ids"][rows, out["mask_positions"][valid]]
    orig = out["mask_ids"][valid]
    is_mask = new == MASK
    kept = new == orig
    # A random replacement can hit the original id (1/VOCAB) or [MASK].
    print(f"\n[MASK] {is_mask.mean():.3f}, unchanged {kept.mean():.3f}")
    assert abs(is_mask.mean() - 0.8 - 0.1 / VOCAB) < 0.015
    assert abs(kept.mean() - 0.1 - 0.1 / VOCAB) < 0.012


def test_text_masker_is_seeded():
    ids, _ = _batch(np.random.default_rng(2), 8, 16)
    masker = _masker(0.5, 16)
    a = masker(ids, tf.constant([1, 2]))
    b = masker(ids, tf.constant([1, 2]))
    c = masker(ids, tf.constant([1, 3]))
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    assert not np.array_equal(a["mask_positions"].numpy(), c["mask_positions"].numpy())
    single = masker(ids[0], tf.constant([1, 2]))
    assert single["token_ids"].shape == (16,) and single["mask_positions"].shape == (8,)


def test_ceil_rule_matches_keras_hub_counts():
    """count_rule="ceil" selects exactly as many tokens per row as keras-hub's
    MaskedLMMaskGenerator on its tf.data path, and never a special token."""
    import keras_hub

    rng = np.random.default_rng(3)
    ids, lengths = _batch(rng, 200, 40, 1, 38)
    library = keras_hub.layers.MaskedLMMaskGenerator(
        vocabulary_size=VOCAB, mask_selection_rate=0.5, mask_token_id=MASK,
        mask_selection_length=20, unselectable_token_ids=[PAD, CLS, SEP],
    )
    ds = tf.data.Dataset.from_tensor_slices(ids).batch(200).map(library)
    ref = next(iter(ds))
    ours = _masker(0.5, 40, count_rule="ceil")(ids, tf.constant([0, 0]))
    ref_counts = ref["mask_weights"].numpy().sum(axis=1)
    our_counts = ours["mask_weights"].numpy().sum(axis=1)
    assert np.array_equal(ref_counts, our_counts)
    assert np.array_equal(our_counts, np.minimum(np.ceil(0.5 * lengths), 20))


def test_stochastic_rule_is_unbiased_per_length():
    ids = np.zeros((4000, 12), np.int32)
    ids[:, 0], ids[:, 1:6], ids[:, 6] = CLS, 9, SEP  # 5 real tokens each
    out = _masker(0.5, 12)(ids, tf.constant([5, 5]))
    counts = out["mask_weights"].numpy().sum(axis=1)
    assert set(np.unique(counts)) <= {2.0, 3.0}
    assert abs(counts.mean() - 2.5) < 0.06


def test_text_masker_rejects_bad_config():
    with pytest.raises(ValueError, match="mask_token_id"):
        TextMasker(vocabulary_size=10, mask_selection_rate=0.15, mask_token_id=10)
    with pytest.raises(ValueError, match="count_rule"):
        TextMasker(vocabulary_size=10, mask_selection_rate=0.15, mask_token_id=4,
                   count_rule="floor")
    with pytest.raises(ValueError, match="exceeds"):
        TextMasker(vocabulary_size=10, mask_selection_rate=0.15, mask_token_id=4,
                   mask_selection_length=9)(np.zeros((1, 8), np.int32), tf.constant([0, 0]))
