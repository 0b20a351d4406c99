"""The one plugin manager of ``vlbeit_keras`` and the registries it fills.

Loading policy (documented in ``docs/plugins.md``, "Loading order"):

1. the built-in default plugins (:data:`DEFAULT_PLUGINS`), in list order;
2. external plugins from the entry-point group ``vlbeit_keras``, sorted by
   entry-point name (the plugin name);
3. every registration hook of every plugin is called once, plugin by plugin in
   that order, filling all registries (:data:`KINDS`).

All three steps run in :func:`load_plugins`, which ``import vlbeit_keras``
calls as its last statement. So after ``import vlbeit_keras`` every plugin
module and every module its hooks import have been imported, and every Keras
class they register with ``keras.saving.register_keras_serializable`` is known
to ``keras.saving.load_model`` and preset loading. (Keras itself never imports
third-party modules while deserializing: ``import vlbeit_keras`` is the one
import a script needs before ``load_model``.)

Every registered part is attributed to the plugin that provided it
(:class:`PluginInfo`: plugin name, module, distribution). Errors:

- a name registered twice in one registry: :class:`DuplicateRegistrationError`
  naming both plugins. For entry-point plugins the error is deferred: it is
  warned about at load time and raised by every access to that registry, so
  ``import vlbeit_keras`` and ``python -m vlbeit_keras plugins`` still work
  and show the conflict. :meth:`PluginManager.register_plugin` raises at once.
- an unknown name: :class:`UnknownNameError` listing the known names;
- an external plugin that fails to import, fails hook validation or whose hook
  raises is skipped and recorded as a :class:`PluginFailure` (its name,
  distribution, stage and the original traceback), with a ``RuntimeWarning``;
  built-in parts are unaffected. A failing *built-in* plugin raises: that is a
  bug in this package.

Environment variables (read at load time):

- ``VLBEIT_KERAS_DISABLE_PLUGINS=1`` (also ``true``/``yes``): do not autoload
  external entry-point plugins; built-ins still load.
- ``VLBEIT_KERAS_LOAD_PLUGINS=a,b``: load only the listed external plugins
  (entry-point names); set but empty loads none. Built-ins always load.
"""

import dataclasses
import importlib
import importlib.metadata
import os
import sys
import threading
import traceback
import warnings

import pluggy

from vlbeit_keras import hookspecs

DISABLE_ENV = "VLBEIT_KERAS_DISABLE_PLUGINS"
LOAD_ENV = "VLBEIT_KERAS_LOAD_PLUGINS"
ENTRY_POINT_GROUP = hookspecs.PROJECT_NAME
BUILTIN_DISTRIBUTION = "vlbeit_keras (built-in)"

# Built-in parts, registered through the same hooks as external plugins.
DEFAULT_PLUGINS = (
    "vlbeit_keras.default_plugins.experts",
    "vlbeit_keras.default_plugins.objectives",
    "vlbeit_keras.default_plugins.tasks",
    "vlbeit_keras.default_plugins.datasets",
    "vlbeit_keras.default_plugins.demo_data",
    "vlbeit_keras.default_plugins.visual_tokenizers",
    "vlbeit_keras.default_plugins.converters",
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

_FALSY = ("", "0", "false", "no", "off")


class PluginError(Exception):
    """Base class of plugin-system errors."""


class UnknownNameError(PluginError, ValueError, KeyError):
    """A name looked up in a registry is not registered (lists known names)."""

    def __str__(self):  # KeyError quotes its message otherwise.
        return str(self.args[0])


class DuplicateRegistrationError(PluginError, ValueError):
    """Two plugins registered the same name in one registry.

    Attributes:
        kind: the registry kind (``"experts"``, ...).
        name: the duplicated name.
        first, second: the :class:`PluginInfo` of both plugins.
    """

    def __init__(self, kind, name, first, second):
        self.kind, self.name, self.first, self.second = kind, name, first, second
        super().__init__(
            f"Duplicate {kind} name '{name}': registered by {first.describe()} "
            f"and again by {second.describe()}. Uninstall one of them, or leave "
            f"one out with {LOAD_ENV}=<comma-separated plugin names>."
        )


@dataclasses.dataclass(frozen=True)
class PluginInfo:
    """Where a plugin came from.

    Attributes:
        name: plugin name (the entry-point name, or the module name of a
            built-in default plugin).
        module: the Python module holding the hook implementations.
        distribution: ``"<name> <version>"`` of the installed distribution
            declaring the entry point, :data:`BUILTIN_DISTRIBUTION` for
            built-ins, or a free text for plugins registered at runtime.
        source: ``"builtin"`` (:data:`DEFAULT_PLUGINS`), ``"entry_point"``
            or ``"runtime"`` (:meth:`PluginManager.register_plugin`).
    """

    name: str
    module: str
    distribution: str
    source: str = "entry_point"

    @property
    def builtin(self):
        return self.source == "builtin"

    def describe(self):
        """``plugin 'x' (module m, distribution d)``: used in error messages."""
        return f"plugin '{self.name}' (module {self.module}, distribution {self.distribution})"

    def to_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One registered part: its name, the object, and the plugin providing it."""

    kind: str
    name: str
    obj: object
    plugin: PluginInfo

    @property
    def object_path(self):
        """``module.QualName`` of the registered object (for listings)."""
        return _object_path(self.obj)


@dataclasses.dataclass(frozen=True)
class PluginFailure:
    """An external plugin that was skipped.

    Attributes:
        name: plugin (entry-point) name.
        distribution: the distribution declaring it.
        stage: ``"import"`` (loading the entry point), ``"validate"`` (pluggy
            rejected its hook implementations), ``"name"`` (plugin name already
            taken) or the hook name whose call raised.
        traceback: the original traceback (or the reason), as text.
    """

    name: str
    distribution: str
    stage: str
    traceback: str

    @property
    def summary(self):
        """The last line of the traceback (the exception)."""
        lines = [ln for ln in self.traceback.strip().splitlines() if ln.strip()]
        return lines[-1] if lines else ""

    def to_dict(self):
        return {**dataclasses.asdict(self), "summary": self.summary}


class Registry:
    """Name -> registered object for one kind of part (e.g. ``experts``).

    Lookups go through :meth:`get`; an unknown name raises
    :class:`UnknownNameError` listing the known names.
    """

    def __init__(self, kind):
        self.kind = kind
        self._entries = {}

    def add(self, name, obj, plugin):
        """Add ``obj`` as ``name``.

        Raises:
            DuplicateRegistrationError: ``name`` is already registered.
        """
        if name in self._entries:
            raise DuplicateRegistrationError(
                self.kind, name, self._entries[name].plugin, plugin
            )
        self._entries[name] = Entry(self.kind, name, obj, plugin)

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
        """The :class:`Entry` of ``name`` (object plus providing plugin)."""
        self.get(name)
        return self._entries[name]

    def names(self):
        return sorted(self._entries)

    def entries(self):
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name):
        return name in self._entries

    def __iter__(self):
        return iter(self.names())

    def __len__(self):
        return len(self._entries)

    def __repr__(self):
        return f"<Registry {self.kind}: {', '.join(self.names()) or '(empty)'}>"


class PluginManager:
    """Owns the pluggy manager, the plugin provenance and the registries.

    Args:
        default_plugins: module names of the built-in plugins.
        entry_point_group: the entry-point group scanned for external plugins.

    One instance, :data:`manager`, serves the package; tests may build their
    own to load plugins under a modified ``sys.path`` or environment.
    """

    def __init__(self, default_plugins=DEFAULT_PLUGINS, entry_point_group=ENTRY_POINT_GROUP):
        self.default_plugins = tuple(default_plugins)
        self.entry_point_group = entry_point_group
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self._info = {}  # plugin name -> PluginInfo
        self._order = []  # plugin names in loading order
        self._ep_values = {}  # plugin name -> entry-point value
        self._load_failures = []
        self._hook_failures = []
        self._registries = {}
        self._errors = {}  # kind -> DuplicateRegistrationError
        self._deferred = []  # (entry point, distribution) awaiting their package
        self._loaded = False
        self._warned = set()
        self._lock = threading.RLock()

    # ---- loading -------------------------------------------------------
    def load(self):
        """Load built-in and external plugins and fill every registry (once).

        An entry-point plugin whose package is still being imported (a user
        imported the plugin package first, and it imported ``vlbeit_keras``)
        cannot be loaded yet; it is deferred and loaded by the next call,
        e.g. the next registry lookup, keeping the documented order.
        """
        with self._lock:
            if not self._loaded:
                self._loaded = True
                for module_name in self.default_plugins:
                    module = importlib.import_module(module_name)
                    info = PluginInfo(module_name, module_name, BUILTIN_DISTRIBUTION, source="builtin")
                    self._add(module, info)
                if not _is_set(os.environ.get(DISABLE_ENV)):
                    self._load_entry_points(_allow_list(os.environ.get(LOAD_ENV)))
                self._rebuild()
            elif self._deferred:
                ready = [d for d in self._deferred if not _initializing(d[0].module)]
                if ready:
                    self._deferred = [d for d in self._deferred if d not in ready]
                    for ep, dist in ready:
                        self._load_entry_point(ep, dist)
                    self._rebuild()

    def _rebuild(self):
        before = {str(e) for e in self._errors.values()}
        self._build_all()
        for error in self._errors.values():
            if str(error) not in before:
                warnings.warn(
                    f"vlbeit_keras: the {error.kind} registry is unusable until "
                    f"this is resolved: {error}",
                    RuntimeWarning,
                    stacklevel=3,
                )

    def _load_entry_points(self, allowed):
        eps = importlib.metadata.entry_points(group=self.entry_point_group)
        for ep in sorted(eps, key=lambda e: (e.name, e.value)):
            if allowed is not None and ep.name not in allowed:
                continue
            dist = _distribution_label(ep)
            if _initializing(ep.module):
                self._deferred.append((ep, dist))
                continue
            self._load_entry_point(ep, dist)

    def _load_entry_point(self, ep, dist):
        if ep.name in self._info:
            if self._ep_values.get(ep.name) == ep.value:
                return  # one distribution seen twice on sys.path
            self._fail(
                ep.name, dist, "name",
                f"PluginError: plugin name '{ep.name}' (entry point {ep.value!r}) is "
                f"already used by {self._info[ep.name].describe()}; skipped.",
            )
            return
        try:
            module = ep.load()
        except BaseException as exc:  # noqa: BLE001 - also SystemExit in a plugin
            if isinstance(exc, KeyboardInterrupt):
                raise
            self._fail(ep.name, dist, "import", traceback.format_exc())
            return
        module_name = getattr(module, "__name__", ep.value)
        if self._add(module, PluginInfo(ep.name, module_name, dist)):
            self._ep_values[ep.name] = ep.value

    def _ordered(self):
        """Plugin names in the documented order: built-ins (listed order),
        entry points (by name), runtime registrations (in call order)."""
        rank = {"builtin": 0, "entry_point": 1, "runtime": 2}

        def key(item):
            index, name = item
            source = self._info[name].source
            return (rank[source], name if source == "entry_point" else "", index)

        return [name for _, name in sorted(enumerate(self._order), key=key)]

    def _add(self, module, info):
        """Register one plugin with pluggy; external failures are recorded."""
        try:
            self.pm.register(module, name=info.name)
            _check_hooks(self.pm, info.name)
        except Exception:
            if self.pm.has_plugin(info.name):
                self.pm.unregister(name=info.name)
            if info.builtin:
                raise
            self._fail(info.name, info.distribution, "validate", traceback.format_exc())
            return False
        self._info[info.name] = info
        self._order.append(info.name)
        return True

    def _fail(self, name, dist, stage, tb, store=None):
        failure = PluginFailure(name, dist, stage, tb)
        (self._load_failures if store is None else store).append(failure)
        if failure in self._warned or self._info.get(name, PluginInfo("", "", "")).source == "runtime":
            return  # warn once; register_plugin raises instead of warning
        self._warned.add(failure)
        warnings.warn(
            f"vlbeit_keras plugin '{name}' ({dist}) failed during {stage} and "
            f"was skipped; built-in parts are unaffected. Original traceback:\n{tb}",
            RuntimeWarning,
            stacklevel=3,
        )

    # ---- registries ----------------------------------------------------
    def _build_all(self):
        """Call every registration hook, plugin by plugin, into fresh registries."""
        self._registries, self._errors, self._hook_failures = {}, {}, []
        for kind, hook_name in KINDS.items():
            self._registries[kind] = self._build(kind, hook_name)

    def _build(self, kind, hook_name):
        registry = Registry(kind)
        impls = {i.plugin_name: i for i in getattr(self.pm.hook, hook_name).get_hookimpls()}
        for plugin_name in self._ordered():
            impl = impls.get(plugin_name)
            if impl is None:
                continue
            info = self._info[plugin_name]
            pending = []

            def register(name, obj, _pending=pending, _info=info):
                if not isinstance(name, str) or not name.strip():
                    raise PluginError(
                        f"{_info.describe()} called {hook_name}'s register() with "
                        f"an invalid name {name!r}; names are non-empty strings."
                    )
                if obj is None:
                    raise PluginError(
                        f"{_info.describe()} registered {kind} '{name}' as None."
                    )
                _pending.append((name, obj))

            try:
                impl.function(register=register)
            except Exception:
                if info.builtin:
                    raise
                self._fail(
                    plugin_name, info.distribution, hook_name, traceback.format_exc(),
                    store=self._hook_failures,
                )
                continue  # a failing hook contributes nothing
            for name, obj in pending:
                try:
                    registry.add(name, obj, info)
                except DuplicateRegistrationError as error:
                    self._errors.setdefault(kind, error)
        return registry

    def registry(self, kind):
        """Return the :class:`Registry` of ``kind``.

        Raises:
            UnknownNameError: ``kind`` is not one of :data:`KINDS`.
            DuplicateRegistrationError: two plugins registered one name in
                this registry.
        """
        if kind not in KINDS:
            raise UnknownNameError(
                f"Unknown registry kind {kind!r}. Known kinds: {', '.join(KINDS)}."
            )
        self.load()
        with self._lock:
            if kind in self._errors:
                raise self._errors[kind]
            if kind not in self._registries:  # read while plugins are loading
                return self._build(kind, KINDS[kind])
            return self._registries[kind]

    def registry_error(self, kind):
        """The deferred :class:`DuplicateRegistrationError` of ``kind``, or None."""
        self.load()
        return self._errors.get(kind)

    def entries(self, kind):
        """Entries of ``kind`` even when the registry has a duplicate error."""
        self.load()
        registry = self._registries.get(kind)
        return [] if registry is None else registry.entries()

    # ---- runtime registration (tests, notebooks) -----------------------
    def register_plugin(self, module, name, distribution="(registered at runtime)"):
        """Register a plugin object (module, class or instance) at runtime.

        Its hooks are called at once and the registries rebuilt.

        Raises:
            DuplicateRegistrationError: it registers a name already taken.
            PluginError: the name is taken by another plugin, pluggy rejects
                its hooks, or one of its hooks raises (original exception
                chained). In every case nothing is left registered.
        """
        self.load()
        with self._lock:
            if name in self._info:
                raise PluginError(f"A plugin named '{name}' is already loaded: {self._info[name].describe()}.")
            info = PluginInfo(
                name, getattr(module, "__name__", type(module).__name__), distribution, source="runtime"
            )
            try:
                self.pm.register(module, name=name)
                _check_hooks(self.pm, name)
            except Exception as exc:
                if self.pm.has_plugin(name):
                    self.pm.unregister(name=name)
                raise PluginError(f"{info.describe()} was rejected: {exc}") from exc
            self._info[name] = info
            self._order.append(name)
            before = dict(self._errors)
            self._build_all()
            mine = [f for f in self._hook_failures if f.name == name]
            new_errors = [e for k, e in self._errors.items() if k not in before]
            if mine or new_errors:
                self._remove(name)
                if new_errors:
                    raise new_errors[0]
                raise PluginError(
                    f"{info.describe()} failed in {mine[0].stage}:\n{mine[0].traceback}"
                )

    def unregister_plugin(self, name):
        """Remove a plugin registered with :meth:`register_plugin`."""
        with self._lock:
            if name not in self._info:
                raise UnknownNameError(
                    f"Unknown plugin {name!r}. Loaded plugins: {', '.join(self._order)}."
                )
            self._remove(name)

    def _remove(self, name):
        self.pm.unregister(name=name)
        self._info.pop(name, None)
        self._ep_values.pop(name, None)
        self._order.remove(name)
        self._build_all()

    # ---- introspection --------------------------------------------------
    def plugins(self):
        """Loaded plugins, in loading order, as :class:`PluginInfo`."""
        self.load()
        return [self._info[n] for n in self._ordered()]

    @property
    def failures(self):
        """Skipped external plugins (:class:`PluginFailure`), in order."""
        self.load()
        return [*self._load_failures, *self._hook_failures]

    def hook_names(self):
        """Names of the hook specifications (``register_experts``, ...)."""
        return sorted(n for n in dir(self.pm.hook) if n.startswith("register_"))

    def summary(self):
        """Everything the ``plugins`` command lists, as JSON-ready data."""
        self.load()
        registries = {}
        for kind in KINDS:
            registries[kind] = [
                {
                    "name": e.name,
                    "object": e.object_path,
                    "plugin": e.plugin.name,
                    "distribution": e.plugin.distribution,
                    "module": e.plugin.module,
                }
                for e in self.entries(kind)
            ]
        return {
            "plugins": [p.to_dict() for p in self.plugins()],
            "registries": registries,
            "errors": {k: str(e) for k, e in self._errors.items()},
            "failures": [f.to_dict() for f in self.failures],
            "environment": {
                DISABLE_ENV: os.environ.get(DISABLE_ENV),
                LOAD_ENV: os.environ.get(LOAD_ENV),
            },
        }


def _object_path(obj):
    """``module.QualName`` of a class or function; for an instance with a
    ``model_cls`` (a task spec) ``TaskSpec(module.ModelClass)``, else its type."""
    if hasattr(obj, "__qualname__") and hasattr(obj, "__module__"):
        return f"{obj.__module__}.{obj.__qualname__}"
    wrapped = getattr(obj, "model_cls", None)
    if wrapped is not None and hasattr(wrapped, "__qualname__"):
        return f"{type(obj).__qualname__}({wrapped.__module__}.{wrapped.__qualname__})"
    return f"{type(obj).__module__}.{type(obj).__qualname__} instance"


def _initializing(module_name):
    """True while ``module_name`` or a parent package is being imported."""
    parts = module_name.split(".")
    for i in range(1, len(parts) + 1):
        module = sys.modules.get(".".join(parts[:i]))
        spec = getattr(module, "__spec__", None)
        if module is not None and getattr(spec, "_initializing", False):
            return True
    return False


def _is_set(value):
    return value is not None and value.strip().lower() not in _FALSY


def _allow_list(value):
    if value is None:
        return None
    return {n.strip() for n in value.split(",") if n.strip()}


def _check_hooks(pm, name):
    """Reject hook implementations whose name matches no hook specification."""
    plugin = pm.get_plugin(name)
    unknown = sorted(
        caller.name
        for caller in pm.get_hookcallers(plugin) or ()
        if caller.spec is None
    )
    if unknown:
        known = ", ".join(sorted(KINDS.values()))
        raise PluginError(
            f"plugin '{name}' implements unknown hook(s) {unknown}; "
            f"vlbeit_keras hooks are: {known}."
        )


def _distribution_label(ep):
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "(unknown distribution)"
    return f"{dist.metadata['Name']} {dist.version}"


manager = PluginManager()


def load_plugins():
    """Load built-in and external plugins and fill every registry (once).

    Called at the end of ``import vlbeit_keras``; safe to call many times.
    """
    manager.load()


def get_registry(kind):
    """The :class:`Registry` of ``kind``, one of :data:`KINDS`.

    Raises:
        UnknownNameError: unknown kind.
        DuplicateRegistrationError: two plugins registered one name of ``kind``.
    """
    return manager.registry(kind)


def get_expert(name):
    """The expert layer class registered as ``name`` (raises with known names)."""
    return get_registry("experts").get(name)
