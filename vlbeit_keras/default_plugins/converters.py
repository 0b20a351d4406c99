"""Built-in checkpoint converters, registered through ``register_checkpoint_converters``."""

from vlbeit_keras.hookspecs import hookimpl


@hookimpl
def register_checkpoint_converters(register):
    from vlbeit_keras.converters.vlmo import VLMoConverter

    register(VLMoConverter.name, VLMoConverter)
