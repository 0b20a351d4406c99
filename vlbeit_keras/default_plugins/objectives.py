"""Built-in pretraining objectives: MLM, MIM, MVLM."""

from vlbeit_keras.hookspecs import hookimpl


@hookimpl
def register_objectives(register):
    from vlbeit_keras.objectives.masked_modeling import MaskedImageModeling
    from vlbeit_keras.objectives.masked_modeling import MaskedLanguageModeling
    from vlbeit_keras.objectives.masked_modeling import MaskedVisionLanguageModeling

    register("mlm", MaskedLanguageModeling)
    register("mim", MaskedImageModeling)
    register("mvlm", MaskedVisionLanguageModeling)
