"""vlbeit-mae-pixel: masked-patch pixel regression (MAE targets) as a vlbeit_keras objective."""

__version__ = "0.1.0"

from vlbeit_mae_pixel.pixel_regression import MaskedPixelRegression
from vlbeit_mae_pixel.pixel_regression import PixelRegressionHead
from vlbeit_mae_pixel.pixel_regression import masked_mse
from vlbeit_mae_pixel.pixel_regression import normalized_pixel_targets
from vlbeit_mae_pixel.pixel_regression import patchify

__all__ = [
    "MaskedPixelRegression",
    "PixelRegressionHead",
    "masked_mse",
    "normalized_pixel_targets",
    "patchify",
]
