"""Callbacks shared by the training recipes."""

import json
import os
import pathlib
import time

import keras
import numpy as np

BACKUP_METADATA = "training_metadata.json"  # written by keras.callbacks.BackupAndRestore


def completed_epochs(backup_dir):
    """Epochs finished by an earlier run, from BackupAndRestore's metadata (0 if none)."""
    path = pathlib.Path(backup_dir) / BACKUP_METADATA
    if not path.exists():
        return 0
    with open(path) as f:
        return int(json.load(f).get("epoch", 0))


def _seed_states(model):
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


class RandomStateBackup(keras.callbacks.Callback):
    """Saves and restores the states of the model's ``SeedGenerator``s.

    ``keras.callbacks.BackupAndRestore`` restores weights and the optimiser
    but not the seed-generator states (drop path, in-model masking, hard
    negatives), so a resumed run would replay the random draws of its first
    steps. Put this callback **before** ``BackupAndRestore`` in the callback
    list: it writes ``random_states.npz`` (atomically) at each epoch end,
    tagged with the epoch, and restores it at train begin when the tag equals
    the epoch that ``BackupAndRestore`` resumes from.
    """

    def __init__(self, backup_dir):
        super().__init__()
        self.backup_dir = pathlib.Path(backup_dir)
        self.path = self.backup_dir / "random_states.npz"

    def on_train_begin(self, logs=None):
        if not self.path.exists():
            return
        data = np.load(self.path)
        if int(data["epoch"]) != completed_epochs(self.backup_dir):
            return
        for i, v in enumerate(_seed_states(self.model)):
            key = f"state_{i}"
            if key in data and tuple(data[key].shape) == tuple(v.shape):
                v.assign(data[key])

    def on_epoch_end(self, epoch, logs=None):
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        arrays = {f"state_{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(_seed_states(self.model))}
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, epoch=np.int64(epoch + 1), **arrays)
        os.replace(tmp, self.path)


class StopAfterSteps(keras.callbacks.Callback):
    """Simulates a kill: ends the process abruptly after ``steps`` batches.

    For tests of resuming (``debug.kill_after_steps``); ``os._exit`` skips
    every ``finally`` and callback, like SIGKILL.
    """

    def __init__(self, steps):
        super().__init__()
        self.steps = int(steps)
        self.seen = 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen >= self.steps:
            os._exit(3)


class StepLogger(keras.callbacks.Callback):
    """Appends the optimiser step and metrics of every epoch to a JSON-lines file."""

    def __init__(self, path):
        super().__init__()
        self.path = pathlib.Path(path)

    def on_epoch_end(self, epoch, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        row = {"epoch": epoch + 1, "step": step, "time": time.time()}
        row.update({k: float(v) for k, v in (logs or {}).items()})
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
