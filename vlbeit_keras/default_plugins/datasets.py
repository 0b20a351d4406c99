"""Built-in dataset readers (see ``vlbeit_keras.data.readers`` and ``docs/data.md``)."""

from vlbeit_keras.hookspecs import hookimpl


@hookimpl
def register_datasets(register):
    from vlbeit_keras.data.readers import READERS

    for name, reader in READERS.items():
        register(name, reader)
