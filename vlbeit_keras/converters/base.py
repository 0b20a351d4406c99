"""The checkpoint-converter contract (``register_checkpoint_converters`` hook).

A converter is a class registered under the name users pass as
``python -m vlbeit_keras convert --from NAME``. The command (and
:func:`vlbeit_keras.converters.convert_checkpoint`) instantiates it without
arguments and calls, in order:

1. :meth:`CheckpointConverter.read_checkpoint` ``(path) -> state_dict``
   (no output is written yet);
2. :meth:`CheckpointConverter.convert` ``(state_dict, ...) -> Conversion``
   (builds the backbone and the task models, assigns every weight, checks
   every shape);
3. :func:`vlbeit_keras.converters.save_conversion` writes the result to a
   temporary folder next to ``--out`` and renames it at the end.

``python -m vlbeit_keras export --to NAME`` calls
:meth:`CheckpointConverter.export` with a loaded :class:`Conversion`.
"""

import dataclasses
from typing import Any

from vlbeit_keras.converters.state_dict_io import CheckpointError
from vlbeit_keras.converters.state_dict_io import read_state_dict


@dataclasses.dataclass
class Conversion:
    """The result of converting a foreign checkpoint.

    Attributes:
        backbone: the ``VLBEiTBackbone`` holding the converted weights.
        tasks: dict task name (``"pretraining"``, ``"retrieval"``, ``"vqa"``,
            ``"nlvr2"``, ...) -> Keras model sharing ``backbone`` with the
            converted heads.
        extras: dict source key -> ``numpy.ndarray``: source arrays that have
            no place in these models (kept so that :meth:`export` reproduces
            the full checkpoint); saved as ``<source>_unmapped.npz``.
        report: JSON-serialisable dict: source, inferred configuration,
            keys used / ignored / unused (with reasons) / unexpected,
            resized weights; saved as ``conversion.json``.
        source: the converter name (``"vlmo"``).
    """

    backbone: Any
    tasks: dict
    extras: dict
    report: dict
    source: str


class CheckpointConverter:
    """Base class of converters registered through ``register_checkpoint_converters``.

    Subclasses set :attr:`name` and :attr:`description` and implement
    :meth:`convert` (and :meth:`export` when the reverse direction exists).
    """

    name = None
    description = ""

    def read_checkpoint(self, path):
        """Read ``path`` into a dict key -> ``numpy.ndarray`` (source layout).

        The default reads PyTorch files with ``torch.load(weights_only=True)``
        and ``.npz`` files (:func:`vlbeit_keras.converters.state_dict_io.read_state_dict`).

        Raises:
            CheckpointError: unreadable, truncated or unsafe file.
        """
        return read_state_dict(path)

    def convert(self, state_dict, *, preset=None, overrides=None, tasks=None, **options):
        """Build models holding the weights of ``state_dict``.

        Args:
            state_dict: dict key -> ``numpy.ndarray`` from :meth:`read_checkpoint`.
            preset: optional built-in preset name whose configuration the
                checkpoint must match (otherwise it is inferred).
            overrides: dict of backbone config fields to set (``--set``).
            tasks: optional sequence of task names to convert (default: all
                whose heads are present).
            **options: converter-specific options.

        Returns:
            :class:`Conversion`.

        Raises:
            CheckpointError: missing, unexpected or mismatched keys (named).
        """
        raise NotImplementedError

    def export(self, conversion):
        """Source-format state dict of ``conversion`` (dict key -> ndarray).

        Raises:
            NotImplementedError: this converter has no reverse direction.
        """
        raise NotImplementedError(f"Converter {self.name!r} cannot export.")


__all__ = ["CheckpointConverter", "CheckpointError", "Conversion"]
