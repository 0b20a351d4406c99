"""vlbeit_keras: VL-BEiT (Bao et al. 2022) on Keras 3 (TensorFlow, JAX, PyTorch)."""

__version__ = "0.1.0"

from vlbeit_keras import optimizers
from vlbeit_keras.hookspecs import hookimpl
from vlbeit_keras.plugins import get_registry
from vlbeit_keras.plugins import load_plugins
from vlbeit_keras.models.presets import BACKBONE_PRESETS
from vlbeit_keras.models.vlbeit_backbone import VLBEiTBackbone
from vlbeit_keras.models.vlbeit_pretrainer import VLBEiTPretrainer

# Plugins load last, so that entry-point plugins importing this package find
# it initialised, and before any user `keras.saving.load_model` call.
load_plugins()
