"""Checkpoint converters: foreign weights <-> vlbeit_keras models.

Converters are registered through the ``register_checkpoint_converters``
plugin hook (built in: ``"vlmo"``, :class:`~vlbeit_keras.converters.vlmo.VLMoConverter`)
and driven by ``python -m vlbeit_keras convert`` / ``export`` or the
functions below. See ``docs/checkpoints.md``.

Importing this package does not import torch; reading a ``.pt`` file does.
"""

from vlbeit_keras.converters.base import CheckpointConverter
from vlbeit_keras.converters.base import Conversion
from vlbeit_keras.converters.preset import convert_checkpoint
from vlbeit_keras.converters.preset import export_checkpoint
from vlbeit_keras.converters.preset import get_converter
from vlbeit_keras.converters.preset import load_conversion
from vlbeit_keras.converters.preset import load_task
from vlbeit_keras.converters.preset import save_conversion
from vlbeit_keras.converters.state_dict_io import CheckpointError
from vlbeit_keras.converters.state_dict_io import read_state_dict
from vlbeit_keras.converters.state_dict_io import write_state_dict

__all__ = [
    "CheckpointConverter",
    "CheckpointError",
    "Conversion",
    "convert_checkpoint",
    "export_checkpoint",
    "get_converter",
    "load_conversion",
    "load_task",
    "read_state_dict",
    "save_conversion",
    "write_state_dict",
]
