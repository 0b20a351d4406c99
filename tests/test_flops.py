"""The analytic FLOP counter against hand counts for the tiny preset."""

import pytest

from vlbeit_keras.flops import block_flops
from vlbeit_keras.flops import cpu_peak_flops
from vlbeit_keras.flops import step_flops
from vlbeit_keras.models.presets import BACKBONE_PRESETS

TINY = BACKBONE_PRESETS["vlbeit_tiny"]["config"]  # d=32, f=64, 2 layers, 32 px / patch 8, text 8, vocab 100


def test_tiny_mim_step_by_hand():
    # Image-only: N = (32/8)^2 = 16 patches + [I_CLS] = 17 tokens.
    s, d, f = 17, 32, 64
    qkv, logits, weighted, proj, ffn = 2 * s * d * 3 * d, 2 * s * s * d, 2 * s * s * d, 2 * s * d * d, 2 * 2 * s * d * f
    assert (qkv, logits, weighted, proj, ffn) == (104448, 18496, 18496, 34816, 139264)
    block = qkv + logits + weighted + proj + ffn  # 315,520
    assert block_flops(s, d, f) == block == 315520
    patch_embed = 2 * 16 * (8 * 8 * 3) * 32  # conv 8x8x3 -> 32 per patch: 196,608
    head = 2 * 6 * 32 * 16  # round(0.4 * 16) = 6 masked patches x Dense(32 -> 16 codes): 6,144
    out = step_flops(TINY, "mim", batch_size=1, codebook_size=16)
    assert out["tokens"] == 17
    assert out["encoder"] == 2 * block == 631040
    assert out["patch_embed"] == patch_embed == 196608
    assert out["heads"] == head == 6144
    assert out["forward"] == 833792
    # Backward = 2x forward, except the patch embedding (no gradient for pixels).
    assert out["train"] == 3 * (631040 + 6144) + 2 * 196608 == 2304768
    # Linear in the batch size; a head over all 16 patches (the HF BEiT layout).
    assert step_flops(TINY, "mim", batch_size=8, codebook_size=16)["train"] == 8 * 2304768
    assert step_flops(TINY, "mim", codebook_size=16, head_positions="all")["heads"] == 2 * 16 * 32 * 16


def test_tiny_mvlm_and_vqa_steps_by_hand():
    s = 8 + 17  # text first, then image
    block = s * (8 * 32 * 32 + 4 * 32 * 64) + 4 * s * s * 32  # 409,600 + 80,000
    assert block == 489600
    mvlm = step_flops(TINY, "mvlm", codebook_size=16)
    text_head = 2 * 4 * (32 * 32 + 32 * 100)  # ceil(0.5 * 8) = 4 positions: dense + decoder
    assert mvlm["encoder"] == 2 * block
    assert mvlm["heads"] == text_head + 2 * 6 * 32 * 16 == 33792 + 6144
    vqa = step_flops(TINY, "vqa", num_answers=10)
    assert vqa["heads"] == 2 * 32 * 32 + 2 * 32 * 64 + 2 * 64 * 10  # pooler + 2-layer MLP
    text = step_flops(TINY, "mlm")
    assert text["tokens"] == 8 and text["patch_embed"] == 0


def test_frozen_tokenizer_runs_forward_only():
    out = step_flops(TINY, "mim", codebook_size=16, tokenizer_flops_per_image=1000)
    base = step_flops(TINY, "mim", codebook_size=16)
    assert out["train"] - base["train"] == 1000


def test_base_preset_magnitude():
    # ViT-Base/16 at 224 px: the usual "17.6 GFLOPs" counts multiply-adds (fvcore/timm),
    # i.e. ~35 GFLOP at 2 FLOPs per multiply-add.
    base = BACKBONE_PRESETS["vlbeit_base"]["config"]
    encoder = step_flops(base, "mim")["encoder"]
    assert 34.5e9 < encoder < 35.5e9


def test_errors_and_cpu_peak():
    with pytest.raises(ValueError, match="Unknown step"):
        step_flops(TINY, "itc")
    with pytest.raises(ValueError, match="head_positions"):
        step_flops(TINY, "mim", head_positions="some")
    peak = cpu_peak_flops(cores=2, frequency_hz=2.5e9, flops_per_cycle=32)
    assert peak["peak"] == 2 * 2.5e9 * 32
