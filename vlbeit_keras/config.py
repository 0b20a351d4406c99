"""Recipe configuration: nested dicts with attribute access and CLI overrides.

Recipes follow big_vision's style (``configs/*.py`` with ``get_config(arg)``
returning sections, comments saying why each value was chosen) and nanoGPT's
``--key=value`` overrides, type-checked against the default.
"""

import ast
import copy
import importlib.util
import json
import pathlib


class Config(dict):
    """A dict whose keys are also attributes; nested dicts become ``Config``.

    ``config.optimizer.learning_rate`` reads ``config["optimizer"]["learning_rate"]``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for key, value in list(self.items()):
            if isinstance(value, dict) and not isinstance(value, Config):
                self[key] = Config(value)

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(
                f"Config has no field {name!r}; fields: {', '.join(sorted(self))}."
            ) from None

    def __setattr__(self, name, value):
        self[name] = Config(value) if isinstance(value, dict) and not isinstance(value, Config) else value

    def __deepcopy__(self, memo):
        return Config({k: copy.deepcopy(v, memo) for k, v in self.items()})

    def to_dict(self):
        """Plain nested dicts (JSON-serialisable when the values are)."""
        return json.loads(json.dumps(self, default=_json_default))


def _json_default(value):
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def _parse_value(text):
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    stripped = text.strip()
    if stripped[:1] in "[{":
        # JSON literals ([true, null], {"a": false}); a bracketed value that
        # is neither Python nor JSON is a mistake, not a string.
        try:
            return json.loads(stripped)
        except ValueError as e:
            if stripped.startswith("[") and stripped.endswith("]"):  # [mlm, mvlm]: bare words
                return [_parse_value(item.strip()) for item in stripped[1:-1].split(",") if item.strip()]
            raise ValueError(
                f"Override value {text!r} starts like a list or dict but is neither a Python "
                f"nor a JSON literal ({e})."
            ) from None
    return text


def _coerce(value, default, key):
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"Override {key}={value!r}: expected true/false.")
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
        return type(default)(value)
    if isinstance(default, (list, tuple)) and isinstance(value, str):
        return type(default)(v.strip() for v in value.split(",") if v.strip())
    if not isinstance(value, type(default)):
        raise ValueError(
            f"Override {key}={value!r} has type {type(value).__name__}; the default "
            f"{default!r} is {type(default).__name__}."
        )
    return value


def apply_overrides(config, overrides):
    """Apply ``["a.b=value", ...]`` to ``config`` in place and return it.

    Values are Python or JSON literals (``3``, ``1e-4``, ``(8, 8)``, ``"x"``,
    ``[true, null]``) or bare strings; ``true``/``false``/``none`` are
    understood. A value must have
    the default's type (ints are accepted for floats; comma-separated strings
    for tuples); a field whose default is None takes anything.

    Raises:
        ValueError: unknown field (the message lists the known fields at that
            level), malformed override, or a type mismatch.
    """
    for item in overrides or ():
        if "=" not in item:
            raise ValueError(f"Override {item!r} is not of the form field=value.")
        key, text = item.split("=", 1)
        key = key.strip().lstrip("-")
        if key.startswith("config."):
            key = key[len("config."):]
        parts = key.split(".")
        node = config
        for i, part in enumerate(parts[:-1]):
            if not isinstance(node, dict) or part not in node:
                known = ", ".join(sorted(node)) if isinstance(node, dict) else "(not a section)"
                raise ValueError(f"Unknown config field '{'.'.join(parts[:i + 1])}'. Known: {known}.")
            node = node[part]
        leaf = parts[-1]
        if not isinstance(node, dict) or leaf not in node:
            known = ", ".join(sorted(node)) if isinstance(node, dict) else "(not a section)"
            raise ValueError(f"Unknown config field '{key}'. Known at that level: {known}.")
        value = _parse_value(text)
        node[leaf] = _coerce(value, node[leaf], key)
        if isinstance(node[leaf], dict) and not isinstance(node[leaf], Config):
            node[leaf] = Config(node[leaf])
    return config


def load_config(spec):
    """Load ``"path/to/config.py"`` or ``"path/to/config.py:arg"``.

    Calls the file's ``get_config(arg)`` (``arg`` is None when omitted).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file has no ``get_config``.
    """
    path, _, arg = str(spec).partition(":")
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Config file {path} does not exist.")
    module_spec = importlib.util.spec_from_file_location(f"_vlbeit_config_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"Config file {path} defines no get_config(arg).")
    return Config(module.get_config(arg or None))
