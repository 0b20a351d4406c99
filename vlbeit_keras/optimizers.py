"""Optimiser defaults: AdamW with VL-BEiT/BEiT weight-decay groups and schedules.

MODEL_SPEC §6.4-6.5. Defaults follow BEiT-3 (arXiv 2208.10442) as the spec
proposes: AdamW beta = (0.9, 0.98), eps 1e-6, weight decay 0.05, linear
warm-up then cosine decay, gradient clipping at global norm 3.0 (BEiT).
"""

import keras

# Substrings of variable paths that are excluded from weight decay although
# they are not 1-D: position tables (relative and absolute).
NO_DECAY_PATTERNS = (
    "relative_position_bias_table",
    "pos_embed",
    "position_embeddings",
)


def no_weight_decay_variables(model):
    """Trainable variables excluded from weight decay (the BEiT rule).

    Every variable with at most one dimension (biases, LayerNorm scales and
    offsets, layerscale ``gamma_1``/``gamma_2``, ``q_bias``/``v_bias``,
    [I_CLS] and [MASK] vectors, logit scales) plus the relative-position
    table and absolute position tables. Kernels and embedding matrices
    (word, token-type, modality-type) are decayed. This fixes VLMo's
    substring rule, which decays the expert norms ``norm2_*``, the
    layerscale gammas, the CLS token and the relative table (MODEL_SPEC §6.5).

    Args:
        model: a Keras model or layer.

    Returns:
        list of ``keras.Variable``.
    """
    return [
        v
        for v in model.trainable_variables
        if len(v.shape) <= 1 or any(p in v.path for p in NO_DECAY_PATTERNS)
    ]


def apply_no_weight_decay_groups(optimizer, model):
    """Exclude :func:`no_weight_decay_variables` from ``optimizer``'s decay.

    Only touches an optimizer that is not built yet, decays weights and has
    no exclusions configured (so a user's own grouping is kept).
    Returns the optimizer.
    """
    inner = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer
    if (
        getattr(inner, "weight_decay", None)
        and not getattr(inner, "built", False)
        and not getattr(inner, "_exclude_from_weight_decay", None)
        and getattr(inner, "_exclude_from_weight_decay_pattern", None) is None
    ):
        inner.exclude_from_weight_decay(var_list=no_weight_decay_variables(model))
    return optimizer


def warmup_cosine_schedule(peak_learning_rate, total_steps, warmup_steps=0, final_learning_rate=0.0):
    """Linear warm-up from 0 to ``peak_learning_rate``, then cosine decay.

    Uses ``keras.optimizers.schedules.CosineDecay``'s built-in warm-up.

    Args:
        peak_learning_rate: float, lr after warm-up.
        total_steps: int, optimiser steps of the whole run (count them
            explicitly; MODEL_SPEC §6.4).
        warmup_steps: int.
        final_learning_rate: float, lr at ``total_steps``.

    Raises:
        ValueError: ``warmup_steps`` not in [0, total_steps].
    """
    total_steps, warmup_steps = int(total_steps), int(warmup_steps)
    if not 0 <= warmup_steps <= total_steps or total_steps < 1:
        raise ValueError(
            f"Need 0 <= warmup_steps <= total_steps and total_steps >= 1; received "
            f"warmup_steps={warmup_steps}, total_steps={total_steps}."
        )
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else peak_learning_rate,
        decay_steps=max(total_steps - warmup_steps, 1),
        alpha=final_learning_rate / peak_learning_rate if peak_learning_rate else 0.0,
        warmup_target=peak_learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps,
    )


def pretraining_optimizer(
    model,
    learning_rate=1e-3,
    total_steps=None,
    warmup_steps=0,
    final_learning_rate=1e-5,
    weight_decay=0.05,
    beta_1=0.9,
    beta_2=0.98,
    epsilon=1e-6,
    global_clipnorm=3.0,
):
    """AdamW for VL-BEiT pretraining with the weight-decay groups applied.

    Args:
        model: the model whose variables are excluded by
            :func:`no_weight_decay_variables` (must be built).
        learning_rate: peak lr (a float), or a schedule.
        total_steps: if given (and ``learning_rate`` is a float), use
            :func:`warmup_cosine_schedule` over this many steps.
        warmup_steps, final_learning_rate: schedule parameters.
        weight_decay, beta_1, beta_2, epsilon: AdamW parameters.
        global_clipnorm: float or None, clip gradients by global norm.

    Returns:
        ``keras.optimizers.AdamW`` (not yet built).
    """
    if total_steps and isinstance(learning_rate, (int, float)):
        learning_rate = warmup_cosine_schedule(learning_rate, total_steps, warmup_steps, final_learning_rate)
    optimizer = keras.optimizers.AdamW(
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        beta_1=beta_1,
        beta_2=beta_2,
        epsilon=epsilon,
        global_clipnorm=global_clipnorm,
    )
    optimizer.exclude_from_weight_decay(var_list=no_weight_decay_variables(model))
    return optimizer
