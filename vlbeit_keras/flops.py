"""Analytic FLOP counts of VL-BEiT training steps (for achieved-FLOP/s figures).

Convention (Kaplan et al. 2020, Sec. 2.1; the PaLM "model FLOPs"): only
matrix multiplications and the patch-embedding convolution are counted, 2
FLOPs per multiply-add; LayerNorm, softmax, GELU, the relative-bias gather,
the optimizer update and other element-wise work are not (a few per cent of
a ViT-Base step). A training step costs the forward pass plus a backward
pass of twice the forward FLOPs (gradients with respect to activations and
to weights), except the patch embedding, whose input (pixels) needs no
gradient (forward + 1x), and frozen parts (the visual tokenizer that makes
MIM targets), which run forward only.

Per MoME block, for a sequence of S tokens, width d, FFN width f (the
expert routing only splits tokens between experts, so the count does not
depend on it)::

    qkv 2*S*d*3d + q.k 2*S*S*d + p.v 2*S*S*d + proj 2*S*d*d + FFN 2*2*S*d*f
    = S * (8 d^2 + 4 d f) + 4 S^2 d

Heads (per example; P = masked positions, gathered before the projection):
MIM ``2 P d K`` (K visual codes); MLM ``2 P (d d + d V)`` (dense + decoder,
V words); VQA ``pooler 2 d^2 + 2 d (2d) + 2 (2d) A`` (A answers). Patch
embedding ``2 N (p^2 3) d``.
"""

import math

STEPS = ("mim", "mvlm", "mlm", "vqa")


def _get(config, name):
    if isinstance(config, dict):
        return config[name]
    return getattr(config, name)


def block_flops(seq_len, hidden_dim, intermediate_dim):
    """Forward FLOPs of one MoME block on one sequence of ``seq_len`` tokens."""
    s, d, f = int(seq_len), int(hidden_dim), int(intermediate_dim)
    return s * (8 * d * d + 4 * d * f) + 4 * s * s * d


def step_flops(
    config,
    step="mim",
    batch_size=1,
    text_length=None,
    num_image_masked=None,
    num_text_masked=None,
    codebook_size=8192,
    num_answers=3129,
    head_positions="masked",
    tokenizer_flops_per_image=0,
):
    """FLOPs of one training step of VL-BEiT (or of a same-shape reference).

    Args:
        config: a ``VLBEiTBackbone`` or its config dict (``num_layers``,
            ``hidden_dim``, ``intermediate_dim``, ``image_size``,
            ``patch_size``, ``vocabulary_size``, ``max_text_length``).
        step: ``"mim"`` (image-only masked image modeling), ``"mvlm"``
            (image-text masked vision-language modeling, text then image),
            ``"mlm"`` (text-only) or ``"vqa"`` (fused pass + VQA classifier).
        batch_size: examples per step.
        text_length: T for text inputs (default the backbone's
            ``max_text_length``).
        num_image_masked: masked patches per image (default round(0.4 N),
            VL-BEiT's block masking ratio).
        num_text_masked: masked text tokens (default ceil(0.5 T) for MVLM,
            ceil(0.15 T) for MLM).
        codebook_size: K visual codes of the MIM head (8192: BEiT's DALL-E
            vocabulary).
        num_answers: A of the VQA head (3,129 for VQA v2).
        head_positions: ``"masked"`` (our heads gather P positions first) or
            ``"all"`` (a head applied to every patch, as Hugging Face
            ``BeitForMaskedImageModeling``, which selects the masked logits
            after the projection).
        tokenizer_flops_per_image: forward FLOPs of a frozen visual tokenizer
            run inside the step (counted once, no backward).

    Returns:
        dict of ints: ``patch_embed``, ``encoder``, ``heads``, ``targets``
        (forward FLOPs of the whole batch), ``forward`` (their sum),
        ``train`` (forward + backward as described in the module docstring),
        and ``tokens`` (sequence length S).

    Raises:
        ValueError: unknown ``step`` or ``head_positions``.
    """
    if step not in STEPS:
        raise ValueError(f"Unknown step {step!r}; use one of {STEPS}.")
    if head_positions not in ("masked", "all"):
        raise ValueError(f"head_positions must be 'masked' or 'all'; received {head_positions!r}.")
    d = int(_get(config, "hidden_dim"))
    f = int(_get(config, "intermediate_dim"))
    layers = int(_get(config, "num_layers"))
    p = int(_get(config, "patch_size"))
    image_size = _get(config, "image_size")
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    n = (h // p) * (w // p)
    t = int(text_length or _get(config, "max_text_length"))
    vocab = int(_get(config, "vocabulary_size"))

    uses_image = step != "mlm"
    uses_text = step != "mim"
    seq = (n + 1 if uses_image else 0) + (t if uses_text else 0)
    patch_embed = 2 * n * (p * p * 3) * d if uses_image else 0
    encoder = layers * block_flops(seq, d, f)

    heads = 0
    targets = 0
    if step in ("mim", "mvlm"):
        masked = n if head_positions == "all" else (
            num_image_masked if num_image_masked is not None else round(0.4 * n))
        heads += 2 * masked * d * int(codebook_size)
        targets += int(tokenizer_flops_per_image)
    if step in ("mvlm", "mlm"):
        rate = 0.5 if step == "mvlm" else 0.15
        masked = num_text_masked if num_text_masked is not None else math.ceil(rate * t)
        heads += 2 * masked * (d * d + d * vocab)
    if step == "vqa":
        heads += 2 * d * d + 2 * d * (2 * d) + 2 * (2 * d) * int(num_answers)

    b = int(batch_size)
    out = {
        "patch_embed": b * patch_embed,
        "encoder": b * encoder,
        "heads": b * heads,
        "targets": b * targets,
        "tokens": seq,
    }
    out["forward"] = out["patch_embed"] + out["encoder"] + out["heads"] + out["targets"]
    out["train"] = 3 * (out["encoder"] + out["heads"]) + 2 * out["patch_embed"] + out["targets"]
    return out


def cpu_peak_flops(cores=None, frequency_hz=None, flops_per_cycle=None):
    """Nominal float32 peak of this CPU, from ``/proc/cpuinfo`` (Linux x86).

    peak = cores x frequency x FLOPs per cycle, where FLOPs per cycle =
    FMA pipes (2) x float32 lanes (8 with AVX2, 16 with AVX-512) x 2 (an FMA
    is a multiply and an add). Cores are the ones this process may use
    (``os.sched_getaffinity``); the frequency is the ``cpu MHz`` line (the
    nominal clock on virtual machines; turbo can exceed it).

    Returns:
        dict: ``peak`` (FLOP/s), ``cores``, ``frequency_hz``,
        ``flops_per_cycle``, ``model`` and ``how`` (a one-line derivation).
    """
    import os

    info = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = set(info.get("flags", "").split())
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if frequency_hz is None:
        frequency_hz = float(info.get("cpu MHz", "0") or 0) * 1e6
    if flops_per_cycle is None:
        lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
        fma = 2 if "fma" in flags else 1
        flops_per_cycle = 2 * lanes * fma
    peak = cores * frequency_hz * flops_per_cycle
    how = (f"{cores} cores x {frequency_hz / 1e9:.3f} GHz x {flops_per_cycle} FLOP/cycle "
           f"({'AVX-512' if 'avx512f' in flags else 'AVX2' if 'avx2' in flags else 'SSE'}"
           f"{' + FMA' if 'fma' in flags else ''}: 2 pipes x lanes x 2)")
    return {"peak": peak, "cores": cores, "frequency_hz": frequency_hz,
            "flops_per_cycle": flops_per_cycle, "model": info.get("model name", "?"), "how": how}
