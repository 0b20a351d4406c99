"""Pretraining objectives (registered through the ``register_objectives`` hook)."""

from vlbeit_keras.objectives.base import PretrainingObjective
from vlbeit_keras.objectives.masked_modeling import MaskedImageModeling
from vlbeit_keras.objectives.masked_modeling import MaskedLanguageModeling
from vlbeit_keras.objectives.masked_modeling import MaskedVisionLanguageModeling
