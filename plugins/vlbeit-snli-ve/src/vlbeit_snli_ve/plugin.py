"""vlbeit_keras plugin module: the ``"snli_ve"`` task and the ``"snli_ve"`` data source.

Entry point ``snli_ve`` of the group ``vlbeit_keras`` (``pyproject.toml``).
The model and loss classes are imported at module level, so Keras knows
``vlbeit_snli_ve>SNLIVEClassifier`` once ``import vlbeit_keras`` has run.
"""

from vlbeit_keras import hookimpl

from vlbeit_snli_ve.reader import read_snli_ve
from vlbeit_snli_ve.task import TASK


@hookimpl
def register_heads(register):
    register("snli_ve", TASK)


@hookimpl
def register_datasets(register):
    register("snli_ve", read_snli_ve)
