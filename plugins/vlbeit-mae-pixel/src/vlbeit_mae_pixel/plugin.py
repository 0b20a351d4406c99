"""vlbeit_keras plugin module: registers the ``"mim_pixel"`` pretraining objective.

Entry point ``mae_pixel`` of the group ``vlbeit_keras`` (``pyproject.toml``).
The head class is imported at module level, so Keras knows
``vlbeit_mae_pixel>PixelRegressionHead`` once ``import vlbeit_keras`` has run.
"""

from vlbeit_keras import hookimpl

from vlbeit_mae_pixel.pixel_regression import MaskedPixelRegression


@hookimpl
def register_objectives(register):
    register("mim_pixel", MaskedPixelRegression)
