"""The recipes' step schedule: checked before anything is built, never changed silently.

Both recipes run ``model.fit`` with one Keras epoch = ``schedule.checkpoint_every``
optimiser steps (a ``BackupAndRestore`` checkpoint at every epoch end), so the
run length is a whole number of epochs.
"""

import math


def _positive_int(schedule, key):
    value = schedule.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"schedule.{key} must be a positive whole number of steps; got {value!r}.")
    return value


def plan_epochs(schedule, report=print):
    """Epochs of a recipe run, from ``schedule.total_steps`` / ``checkpoint_every``.

    Args:
        schedule: mapping with ``total_steps`` and ``checkpoint_every`` (and
            optionally ``log_every``), positive ints. A ``checkpoint_every``
            larger than ``total_steps`` is lowered to ``total_steps`` *in
            the mapping* (one checkpoint, at the end), so the resolved
            ``config.json`` says what ran.
        report: callable taking a message line, told of that change
            (``print`` by default; None = silent).

    Returns:
        (epochs, steps_per_epoch): ``epochs * steps_per_epoch ==
        total_steps`` exactly.

    Raises:
        ValueError: a field is not a positive int, or ``total_steps`` is not
            a multiple of ``checkpoint_every`` (the message names both and
            the nearest step counts that are).
    """
    total = _positive_int(schedule, "total_steps")
    every = _positive_int(schedule, "checkpoint_every")
    if schedule.get("log_every") is not None:
        _positive_int(schedule, "log_every")
    if every > total:
        schedule["checkpoint_every"] = total
        if report is not None:
            report(f"schedule.checkpoint_every={every} is more than schedule.total_steps={total}: "
                   f"one checkpoint, at step {total} (checkpoint_every={total}).")
        every = total
    if total % every:
        lower, upper = (total // every) * every, int(math.ceil(total / every)) * every
        choices = f"total_steps={upper}" if lower == 0 else f"total_steps={lower} or {upper}"
        raise ValueError(
            f"schedule.total_steps={total} is not a multiple of schedule.checkpoint_every="
            f"{every} (the run checkpoints every {every} steps and stops at a checkpoint): "
            f"use {choices}, or a checkpoint_every that divides {total}."
        )
    return total // every, every
