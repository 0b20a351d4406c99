"""The one plugin manager of ``vlbeit_keras`` and the registries it fills.

Loading order (one policy, documented in ``docs/plugins.md``):

1. the built-in default plugins (:data:`DEFAULT_PLUGINS`), in list order;
2. external plugins from the entry-point group ``vlbeit_keras``, sorted by
   entry-point name.

Registries are filled by calling each plugin's hook implementation in that
order, one plugin at a time, so every registered part is attributed to the
plugin that provided it. A name registered twice raises
:class:`DuplicateRegistrationError` naming both plugins.

Environment variables:

- ``VLBEIT_KERAS_DISABLE_PLUGINS=1``: do not autoload external entry-point
  plugins (built-ins still load).
- ``VLBEIT_KERAS_LOAD_PLUGINS=a,b``: load only the listed external plugins (by
  entry-point name); an empty value loads none.

Loading is lazy and idempotent: :func:`load_plugins` runs once, at the end of
``import vlbeit_keras``, so plugin Keras classes are registered before any
``keras.saving.load_model`` or preset loading.
"""

import dataclasses
import importlib
import importlib.metadata
import os
import threading
import traceback
import warnings

import pluggy

from vlbeit_keras import hookspecs

DISABLE_ENV = "VLBEIT_KERAS_DISABLE_PLUGINS"
LOAD_ENV = "VLBEIT_KERAS_LOAD_PLUGINS"
ENTRY_POINT_GROUP = hookspecs.PROJECT_NAME

# Built-in parts, registered through the same hooks as external plugins.
DEFAULT_PLUGINS = (
    "vlbeit_keras.default_plugins.experts",
    "vlbeit_keras.default_plugins.objectives",
    "vlbeit_keras.default_plugins.datasets",
    "vlbeit_keras.default_plugins.demo_data",
    "vlbeit_keras.default_plugins.visual_tokenizers",
    "vlbeit_keras.default_plugins.tasks",
)

# Registry kind -> hook name.
KINDS = {
    "experts": "register_experts",
    "objectives": "register_objectives",
    "heads": "register_heads",
    "datasets": "register_datasets",
    "visual_tokenizers": "register_visual_tokenizers",
    "checkpoint_converters": "register_checkpoint_converters",
}


class PluginError(Exception):
    """Base class of plugin-system errors."""


class UnknownNameError(PluginError, ValueError, KeyError):
    """A name looked up in a registry is not registered (lists known names)."""

    def __str__(self):  # KeyError quotes its message otherwise.
        return str(self.args[0])


class DuplicateRegistrationError(PluginError, ValueError):
    """Two plugins registered the same name in one registry."""


@dataclasses.dataclass(frozen=True)
class PluginInfo:
    """Where a plugin came from.

    Attributes:
        name: plugin name (entry-point name, or the module name of a built-in).
        module: the Python module holding the hook implementations.
        distribution: ``"name version"`` of the installing distribution, or
            ``"vlbeit_keras (built-in)"``.
    """

    name: str
    module: str
    distribution: str

    def describe(self):
        return f"plugin '{self.name}' (module {self.module}, distribution {self.distribution})"


@dataclasses.dataclass(frozen=True)
class Entry:
    """One registered part: its name, the object, and the plugin providing it."""

    name: str
    obj: object
    plugin: PluginInfo


@dataclasses.dataclass(frozen=True)
class PluginFailure:
    """An external plugin that failed to import or whose hook raised."""

    name: str
    distribution: str
    stage: str
    traceback: str


class Registry:
    """Name -> registered object for one kind of part (e.g. ``experts``).

    Lookups go through :meth:`get`; an unknown name raises
    :class:`UnknownNameError` listing the known names.
    """

    def __init__(self, kind):
        self.kind = kind
        self._entries = {}

    def add(self, name, obj, plugin):
        if not isinstance(name, str) or not name:
            raise PluginError(
                f"{plugin.describe()} registered a {self.kind} entry with an "
                f"invalid name {name!r}; names must be non-empty strings."
            )
        if name in self._entries:
            first = self._entries[name].plugin
            raise DuplicateRegistrationError(
                f"Duplicate {self.kind} name '{name}': registered by "
                f"{first.describe()} and again by {plugin.describe()}. "
                f"Uninstall one of them or disable it with {LOAD_ENV}."
            )
        self._entries[name] = Entry(name, obj, plugin)

    def get(self, name):
        """Return the object registered under ``name``.

        Raises:
            UnknownNameError: ``name`` is not registered; the message lists
                the known names.
        """
        try:
            return self._entries[name].obj
        except (KeyError, TypeError):
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise UnknownNameError(
                f"Unknown {self.kind} name {name!r}. Known {self.kind}: {known}."
            ) from None

    def entry(self, name):
        self.get(name)
        return self._entries[name]

    def names(self):
        return sorted(self._entries)

    def entries(self):
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name):
        return name in self._entries

    def __len__(self):
        return len(self._entries)


class PluginManager:
    """Owns the pluggy manager, the plugin provenance and the registries."""

    def __init__(self):
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self._info = {}  # plugin name -> PluginInfo
        self._order = []  # plugin names in loading order
        self.failures = []
        self._registries = {}
        self._loaded = False
        self._lock = threading.RLock()

    # ---- loading -------------------------------------------------------
    def load(self):
        """Load default and external plugins once (idempotent)."""
        with self._lock:
            if self._loaded:
                return
            self._loaded = True
            for module_name in DEFAULT_PLUGINS:
                module = importlib.import_module(module_name)
                self._register_module(
                    module, module_name, "vlbeit_keras (built-in)"
                )
            self._load_entry_points()
            self.pm.check_pending()

    def _load_entry_points(self):
        if os.environ.get(DISABLE_ENV, "").strip() not in ("", "0", "false"):
            return
        allow = os.environ.get(LOAD_ENV)
        allowed = None
        if allow is not None:
            allowed = {n.strip() for n in allow.split(",") if n.strip()}
        eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        for ep in sorted(eps, key=lambda e: e.name):
            if allowed is not None and ep.name not in allowed:
                continue
            dist = _distribution_label(ep)
            if ep.name in self._info:
                # Same entry point seen twice (e.g. two installs on sys.path).
                continue
            try:
                module = ep.load()
            except Exception:
                self._fail(ep.name, dist, "import", traceback.format_exc())
                continue
            module_name = getattr(module, "__name__", ep.value)
            self._register_module(module, ep.name, dist, module_name)

    def _register_module(self, module, name, dist, module_name=None):
        self.pm.register(module, name=name)
        self._info[name] = PluginInfo(name, module_name or name, dist)
        self._order.append(name)

    def _fail(self, name, dist, stage, tb):
        failure = PluginFailure(name, dist, stage, tb)
        self.failures.append(failure)
        warnings.warn(
            f"vlbeit_keras plugin '{name}' ({dist}) failed during {stage} and "
            f"was skipped; built-in parts are unaffected. Original traceback:\n{tb}",
            RuntimeWarning,
            stacklevel=3,
        )

    def register_plugin(self, module, name, distribution="(registered at runtime)"):
        """Register a plugin object at runtime (tests, notebooks).

        Registries already built are dropped and rebuilt on next access.
        """
        self.load()
        with self._lock:
            self._register_module(
                module, name, distribution, getattr(module, "__name__", name)
            )
            self._registries.clear()

    def unregister_plugin(self, name):
        """Remove a plugin registered with :meth:`register_plugin`."""
        with self._lock:
            self.pm.unregister(name=name)
            self._info.pop(name, None)
            self._order.remove(name)
            self._registries.clear()

    # ---- registries ----------------------------------------------------
    def registry(self, kind):
        """Return the :class:`Registry` of ``kind`` (built on first access)."""
        if kind not in KINDS:
            raise UnknownNameError(
                f"Unknown registry kind {kind!r}. Known kinds: {', '.join(KINDS)}."
            )
        self.load()
        with self._lock:
            if kind not in self._registries:
                self._registries[kind] = self._build_registry(kind)
            return self._registries[kind]

    def _build_registry(self, kind):
        registry = Registry(kind)
        hook_name = KINDS[kind]
        impls = {
            impl.plugin_name: impl
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls()
        }
        for plugin_name in self._order:
            impl = impls.get(plugin_name)
            if impl is None:
                continue
            info = self._info[plugin_name]

            def register(name, obj, _info=info):
                registry.add(name, obj, _info)

            if info.distribution.endswith("(built-in)"):
                impl.function(register=register)
                continue
            try:
                impl.function(register=register)
            except DuplicateRegistrationError:
                raise
            except Exception:
                self._fail(
                    plugin_name, info.distribution, f"{hook_name}", traceback.format_exc()
                )
        return registry

    def plugins(self):
        """Loaded plugins, in loading order, as :class:`PluginInfo`."""
        self.load()
        return [self._info[n] for n in self._order]


def _distribution_label(ep):
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "(unknown distribution)"
    return f"{dist.metadata['Name']} {dist.version}"


manager = PluginManager()


def load_plugins():
    """Load built-in and external plugins (once). Safe to call many times."""
    manager.load()


def get_registry(kind):
    """The registry of ``kind``: one of :data:`KINDS`."""
    return manager.registry(kind)


def get_expert(name):
    """The expert layer class registered as ``name`` (raises with known names)."""
    return get_registry("experts").get(name)
