"""Test-only plugin distributions, without pip.

:func:`write_distribution` writes plugin modules plus a ``<name>-<version>.dist-info``
folder (``METADATA`` and ``entry_points.txt``) into a directory; with that
directory on ``sys.path`` (or ``PYTHONPATH`` for a subprocess)
``importlib.metadata.entry_points(group="vlbeit_keras")`` finds the entry
points exactly as for a pip-installed distribution.
"""

import contextlib
import pathlib
import re
import textwrap
import types


def write_distribution(root, name, version="0.1", entry_points=None, files=None):
    """Write a fake installed distribution under ``root``.

    Args:
        root: directory to put on ``sys.path``.
        name: distribution name, e.g. ``"vlbeit-fake"``.
        version: version string.
        entry_points: dict, entry-point name -> ``"module"`` or ``"module:attr"``
            of the ``vlbeit_keras`` group.
        files: dict, relative path (``"pkg/__init__.py"``) -> source text
            (dedented).

    Returns:
        pathlib.Path of ``root``.
    """
    root = pathlib.Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for rel, source in (files or {}).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    normalized = re.sub(r"[-_.]+", "_", name)
    info = root / f"{normalized}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = ["[vlbeit_keras]"] + [f"{k} = {v}" for k, v in (entry_points or {}).items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return root


def expert_plugin_source(expert_name, class_name, package):
    """Source of a plugin module registering a FeedForwardExpert subclass as ``expert_name``.

    The class is Keras-serializable under ``package`` and defined at module
    level (imported when the entry point loads).
    """
    return f'''
        import keras
        from vlbeit_keras import hookimpl
        from vlbeit_keras.layers.feed_forward_expert import FeedForwardExpert


        @keras.saving.register_keras_serializable(package="{package}")
        class {class_name}(FeedForwardExpert):
            """FeedForwardExpert with a ReLU (a distinct expert kind for tests)."""

            def call(self, x, training=None):
                return self.fc2(keras.ops.relu(self.fc1(self.norm(x))))


        @hookimpl
        def register_experts(register):
            register("{expert_name}", {class_name})
    '''


@contextlib.contextmanager
def registered_task(name, spec, plugin_name, distribution):
    """Register the TaskSpec ``spec`` as ``name`` through a runtime plugin's
    ``register_heads`` hook (as a third-party package would); the plugin is
    always unregistered on exit. Yields ``spec``."""
    from vlbeit_keras.hookspecs import hookimpl
    from vlbeit_keras.plugins import manager

    @hookimpl
    def register_heads(register):
        register(name, spec)

    plugin = types.ModuleType(plugin_name)
    plugin.register_heads = register_heads
    manager.register_plugin(plugin, plugin_name, distribution)
    try:
        yield spec
    finally:
        manager.unregister_plugin(plugin_name)
