"""Reading and writing foreign state dicts (PyTorch ``.pt``/``.pth`` and ``.npz``).

A *state dict* here is a plain ``dict`` of ``str`` key -> ``numpy.ndarray`` in
the source framework's layout (PyTorch: Linear ``[out, in]``, Conv2d
``[out, in, kh, kw]``).

PyTorch files are read with ``torch.load(weights_only=True)``: the restricted
unpickler that only rebuilds tensors, containers and primitive types, so a
checkpoint cannot execute code. torch is imported only when such a file is
read (``import vlbeit_keras`` does not import it).
"""

import os
import pathlib
import tempfile
import zipfile

import numpy as np

PYTORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
NUMPY_SUFFIXES = (".npz",)
# Containers that wrap the weights in training checkpoints (Lightning's
# ``state_dict``, DeiT/BEiT's ``model``, DataParallel's ``module``).
WRAPPER_KEYS = ("state_dict", "model", "module")
MODULE_PREFIX = "module."


class CheckpointError(ValueError):
    """A checkpoint file cannot be read or does not fit the target model.

    The message names the file and, where one is at fault, the key.
    """


def read_state_dict(path):
    """Read a state dict from ``.pt``/``.pth``/``.bin``/``.ckpt`` or ``.npz``.

    Nested checkpoints are unwrapped: while the object is a dict holding one
    of :data:`WRAPPER_KEYS` whose value is a dict, descend into it (so
    ``{"state_dict": {...}}``, ``{"model": {...}}``, ``{"module": {...}}`` and
    combinations work); then a ``module.`` prefix shared by all keys
    (``torch.nn.DataParallel``) is stripped.

    Args:
        path: str or path-like.

    Returns:
        dict str -> ``numpy.ndarray`` (floating tensors of any precision as
        float32 unless they are float64; integer buffers keep their dtype).

    Raises:
        CheckpointError: the file is missing, truncated or corrupt, is not a
            weights-only PyTorch file or an ``.npz``, holds no dict of arrays,
            or a value is not a tensor/array (the message names the file and
            the key).
    """
    path = pathlib.Path(os.fspath(path))
    if not path.is_file():
        raise CheckpointError(f"Checkpoint file {str(path)!r} does not exist.")
    suffix = path.suffix.lower()
    if suffix in NUMPY_SUFFIXES:
        raw = _read_npz(path)
    elif suffix in PYTORCH_SUFFIXES:
        raw = _read_torch(path)
    else:
        raise CheckpointError(
            f"Checkpoint {str(path)!r}: unknown file type {suffix!r}; expected one of "
            f"{PYTORCH_SUFFIXES + NUMPY_SUFFIXES}."
        )
    return _to_numpy_dict(unwrap_state_dict(raw, path), path)


def unwrap_state_dict(obj, path="<state dict>"):
    """Descend into ``state_dict``/``model``/``module`` wrappers, strip ``module.``.

    Returns:
        the innermost dict (keys unchanged except the ``module.`` prefix).

    Raises:
        CheckpointError: ``obj`` is not a dict.
    """
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"Checkpoint {str(path)!r} holds a {type(obj).__name__}, not a dict of tensors."
        )
    while True:
        inner = next(
            (obj[k] for k in WRAPPER_KEYS if k in obj and isinstance(obj[k], dict)), None
        )
        if inner is None:
            break
        obj = inner
    keys = list(obj)
    if keys and all(isinstance(k, str) and k.startswith(MODULE_PREFIX) for k in keys):
        obj = {k[len(MODULE_PREFIX):]: v for k, v in obj.items()}
    return obj


def _read_npz(path):
    try:
        with np.load(path, allow_pickle=False) as data:
            # Read every array now: a truncated member fails here, not later.
            return {key: np.array(data[key]) for key in data.files}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError) as error:
        raise CheckpointError(
            f"Cannot read checkpoint {str(path)!r} as a NumPy .npz of named arrays "
            f"(truncated or corrupt?): {type(error).__name__}: {error}"
        ) from error


def _read_torch(path):
    try:
        import torch
    except ImportError as error:  # pragma: no cover - torch is a declared extra
        raise CheckpointError(
            f"Reading {str(path)!r} needs PyTorch (pip install torch), or convert the "
            "state dict to .npz first."
        ) from error
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for bad files
        text = f"{type(error).__name__}: {error}"
        hint = "truncated or corrupt file?"
        if "weights_only" in text or "Unsupported global" in text:
            hint = (
                "it holds Python objects other than tensors and containers, which "
                "torch.load(weights_only=True) refuses to rebuild (no code is run). "
                "Extract the state dict in a trusted environment, e.g. "
                "torch.save(torch.load(f, weights_only=False)['state_dict'], 'weights.pt')"
            )
        raise CheckpointError(
            f"Cannot read PyTorch checkpoint {str(path)!r} ({hint}): {text[:2000]}"
        ) from error


def _to_numpy_dict(state_dict, path):
    out = {}
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise CheckpointError(f"Checkpoint {str(path)!r}: key {key!r} is not a string.")
        out[key] = _to_numpy(value, key, path)
    return out


def _to_numpy(value, key, path):
    if isinstance(value, np.ndarray):
        array = value
    elif hasattr(value, "detach") and hasattr(value, "numpy"):  # torch.Tensor
        import torch

        tensor = value.detach().cpu()
        if tensor.is_floating_point() and tensor.dtype != torch.float64:
            tensor = tensor.to(torch.float32)  # bfloat16/float16 have no exact NumPy twin
        array = tensor.numpy()
    elif isinstance(value, (int, float, np.number)):
        array = np.asarray(value)
    else:
        raise CheckpointError(
            f"Checkpoint {str(path)!r}: key {key!r} holds a {type(value).__name__}, not a tensor."
        )
    if array.dtype.kind == "f" and array.dtype != np.float64:
        array = array.astype(np.float32, copy=False)
    return array


def write_state_dict(state_dict, path):
    """Write a state dict atomically as ``.npz`` (or ``.pt`` via torch).

    The file is written to a temporary name in the same folder and renamed
    at the end, so an interrupted write never leaves a partial file.

    Args:
        state_dict: dict str -> array-like.
        path: output path ending in ``.npz``, ``.pt`` or ``.pth``.

    Returns:
        ``pathlib.Path`` of the written file.

    Raises:
        ValueError: unknown suffix.
    """
    path = pathlib.Path(os.fspath(path))
    suffix = path.suffix.lower()
    if suffix not in NUMPY_SUFFIXES + (".pt", ".pth"):
        raise ValueError(f"Output {str(path)!r}: write .npz, .pt or .pth, not {suffix!r}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        arrays = {k: np.asarray(v) for k, v in state_dict.items()}
        if suffix in NUMPY_SUFFIXES:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        else:
            import torch

            torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}, tmp)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path
