"""vlbeit_keras plugin module: registers the ``"swiglu"`` expert kind.

Declared in ``pyproject.toml`` as the entry point ``swiglu`` of the group
``vlbeit_keras``. The expert class is imported at module level, so it is
registered with Keras (``vlbeit_swiglu>SwiGLUExpert``) as soon as
``import vlbeit_keras`` loads the plugins.
"""

from vlbeit_keras import hookimpl

from vlbeit_swiglu.swiglu_expert import SwiGLUExpert


@hookimpl
def register_experts(register):
    register("swiglu", SwiGLUExpert)
