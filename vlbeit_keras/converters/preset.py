"""Converted-checkpoint folders: write atomically, load back, export.

Folder layout (a keras-hub preset plus task files)::

    DIR/config.json, metadata.json, model.weights.h5   VLBEiTBackbone preset
                                                       (Backbone.save_to_preset)
    DIR/task_<name>.json                               the task model's Keras config
    DIR/task_<name>.weights.h5                         its head weights only (backbone
                                                       skipped, keras-hub
                                                       Task.save_task_weights convention)
    DIR/<source>_unmapped.npz                          source arrays with no place
    DIR/conversion.json                                the conversion report

``VLBEiTBackbone.from_preset(DIR)`` loads the backbone; :func:`load_task`
(``DIR``, name) a task model sharing it; :func:`load_conversion` everything.
"""

import json
import os
import pathlib
import shutil
import tempfile

import numpy as np

from vlbeit_keras.converters.base import Conversion
from vlbeit_keras.converters.state_dict_io import CheckpointError
from vlbeit_keras.converters.state_dict_io import write_state_dict

REPORT_FILE = "conversion.json"


def task_files(name):
    """(config file, weights file) names of task ``name`` in a converted folder."""
    return f"task_{name}.json", f"task_{name}.weights.h5"


def extras_file(source):
    """File name of the unmapped source arrays of converter ``source``."""
    return f"{source}_unmapped.npz"


def _backbone_layers(model):
    backbone = model.backbone
    return [backbone, *backbone._flatten_layers()]


def save_conversion(conversion, out_dir, overwrite=False):
    """Write a :class:`Conversion` to ``out_dir`` atomically.

    Everything is written to a temporary folder next to ``out_dir`` and
    renamed at the end; on any error the temporary folder is removed, so
    ``out_dir`` is either absent, the complete new result, or (when the
    error comes before the rename) untouched.

    Args:
        conversion: the converter's result.
        out_dir: folder to create.
        overwrite: replace an existing ``out_dir``.

    Returns:
        ``pathlib.Path`` of ``out_dir``.

    Raises:
        FileExistsError: ``out_dir`` exists and ``overwrite`` is False.
    """
    import keras

    out = pathlib.Path(os.fspath(out_dir)).absolute()
    if out.exists() and not overwrite:
        raise FileExistsError(f"Output folder {str(out)!r} exists; pass --overwrite to replace it.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        conversion.backbone.save_to_preset(str(tmp))
        tasks = {}
        for name, model in conversion.tasks.items():
            config_file, weights_file = task_files(name)
            with open(tmp / config_file, "w", encoding="utf-8") as f:
                json.dump(keras.saving.serialize_keras_object(model), f, indent=2)
            keras.saving.save_weights(model, str(tmp / weights_file),
                                      objects_to_skip=_backbone_layers(model))
            tasks[name] = {"class": type(model).__name__, "config": config_file,
                           "weights": weights_file}
        report = dict(conversion.report)
        report["task_files"] = tasks
        if conversion.extras:
            report["extras_file"] = extras_file(conversion.source)
            write_state_dict(conversion.extras, tmp / report["extras_file"])
        with open(tmp / REPORT_FILE, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2, default=_json_default)
        _chmod_default(tmp, directory=True)
        for child in tmp.iterdir():
            _chmod_default(child)
        if out.exists():
            old = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, old / out.name)
            try:
                os.rename(tmp, out)
            except BaseException:
                os.rename(old / out.name, out)  # put the previous folder back
                shutil.rmtree(old, ignore_errors=True)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _chmod_default(path, directory=False):
    """Give ``mkdtemp``/``mkstemp`` results (0700/0600) the usual umask-based mode."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def _json_default(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    return str(value)


def read_report(preset_dir):
    """The ``conversion.json`` of a converted folder ({} for a plain backbone preset)."""
    path = pathlib.Path(os.fspath(preset_dir)) / REPORT_FILE
    if not path.exists():
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_task(preset_dir, name=None, backbone=None):
    """Load a converted task model (backbone + head weights) from a folder.

    Args:
        preset_dir: a folder written by :func:`save_conversion`.
        name: task name (``"vqa"``, ``"retrieval"``, ...); may be omitted
            when the folder holds exactly one task.
        backbone: a ``VLBEiTBackbone`` already loaded from ``preset_dir`` to
            share (default: loaded here).

    Returns:
        the task model (``VLBEiTVQA``, ``VLBEiTNLVR2``, ``VLBEiTRetrieval``,
        ``VLBEiTPretrainer``, ...), not compiled.

    Raises:
        ValueError: no such task in the folder (lists the ones present).
    """
    import keras

    from vlbeit_keras.models.vlbeit_backbone import VLBEiTBackbone

    preset_dir = pathlib.Path(os.fspath(preset_dir))
    tasks = read_report(preset_dir).get("task_files", {})
    if name is None:
        if len(tasks) != 1:
            raise ValueError(
                f"{str(preset_dir)!r} holds tasks {sorted(tasks)}; name the one to load."
            )
        name = next(iter(tasks))
    if name not in tasks:
        raise ValueError(f"{str(preset_dir)!r} holds no task {name!r}; tasks: {sorted(tasks)}.")
    if backbone is None:
        backbone = VLBEiTBackbone.from_preset(str(preset_dir))
    with open(preset_dir / tasks[name]["config"], encoding="utf-8") as f:
        serialized = json.load(f)
    # Task classes register with Keras when the heads registry is built
    # (built-in and plugin tasks alike).
    from vlbeit_keras.plugins import get_registry

    get_registry("heads")
    cls = keras.saving.get_registered_object(serialized["registered_name"])
    if cls is None:
        raise ValueError(
            f"Task class {serialized['registered_name']!r} of {str(preset_dir)!r} is not "
            "registered (is the plugin that defines it installed?)."
        )
    config = dict(serialized["config"])
    config["backbone"] = backbone
    model = cls.from_config(config)
    keras.saving.load_weights(model, str(preset_dir / tasks[name]["weights"]),
                              objects_to_skip=_backbone_layers(model))
    return model


def load_conversion(preset_dir, tasks=None):
    """Backbone, task models and extras of a converted (or plain preset) folder.

    Args:
        preset_dir: a folder written by :func:`save_conversion`, or any
            ``VLBEiTBackbone`` preset folder (then without tasks and extras).
        tasks: names of the tasks to load (default all).

    Returns:
        :class:`~vlbeit_keras.converters.Conversion`.
    """
    from vlbeit_keras.converters.state_dict_io import read_state_dict
    from vlbeit_keras.models.vlbeit_backbone import VLBEiTBackbone

    preset_dir = pathlib.Path(os.fspath(preset_dir))
    report = read_report(preset_dir)
    backbone = VLBEiTBackbone.from_preset(str(preset_dir))
    names = list(report.get("task_files", {})) if tasks is None else list(tasks)
    models = {name: load_task(preset_dir, name, backbone=backbone) for name in names}
    extras = {}
    if report.get("extras_file"):
        extras = read_state_dict(preset_dir / report["extras_file"])
    return Conversion(backbone=backbone, tasks=models, extras=extras, report=report,
                      source=report.get("converter"))


def get_converter(name):
    """An instance of the checkpoint converter registered as ``name``."""
    from vlbeit_keras.plugins import get_registry

    converter = get_registry("checkpoint_converters").get(name)
    return converter() if isinstance(converter, type) else converter


def convert_checkpoint(checkpoint, out_dir, source="vlmo", overwrite=False, **options):
    """Convert a foreign checkpoint file into a converted folder.

    Reads ``checkpoint`` with the converter registered as ``source``, converts
    it (``options`` go to its ``convert``: ``preset``, ``overrides``,
    ``tasks``, ...), then writes ``out_dir`` atomically
    (:func:`save_conversion`). Nothing is written when reading or converting
    fails.

    Returns:
        :class:`~vlbeit_keras.converters.Conversion`.

    Raises:
        CheckpointError: unreadable or mismatched checkpoint.
        FileExistsError: ``out_dir`` exists and ``overwrite`` is False.
    """
    out = pathlib.Path(os.fspath(out_dir))
    if out.exists() and not overwrite:
        raise FileExistsError(f"Output folder {str(out)!r} exists; pass --overwrite to replace it.")
    converter = get_converter(source)
    state_dict = converter.read_checkpoint(checkpoint)
    options.setdefault("source", os.fspath(checkpoint))
    conversion = converter.convert(state_dict, **options)
    conversion.report["source_file"] = os.path.abspath(os.fspath(checkpoint))
    save_conversion(conversion, out, overwrite=overwrite)
    return conversion


def export_checkpoint(model_or_dir, out_path, to="vlmo", tasks=None):
    """Write our weights as a foreign state dict (``.npz``, or ``.pt``).

    Args:
        model_or_dir: a converted folder / backbone preset folder, a ``.keras``
            file (backbone, task model or pretrainer), a
            :class:`~vlbeit_keras.converters.Conversion`, a
            ``VLBEiTBackbone`` or a task model.
        out_path: ``.npz`` (or ``.pt``/``.pth``) file, written atomically.
        to: the registered converter whose ``export`` to use.
        tasks: task names to include (folders only; default all).

    Returns:
        dict key -> ``numpy.ndarray`` that was written.
    """
    conversion = as_conversion(model_or_dir, tasks=tasks)
    state_dict = get_converter(to).export(conversion)
    write_state_dict(state_dict, out_path)
    return state_dict


def as_conversion(obj, tasks=None):
    """A :class:`Conversion` view of a folder, ``.keras`` file or model."""
    from vlbeit_keras.converters.vlmo import task_name_of
    from vlbeit_keras.models.vlbeit_backbone import VLBEiTBackbone

    if isinstance(obj, Conversion):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        path = pathlib.Path(os.fspath(obj))
        if path.is_dir():
            return load_conversion(path, tasks=tasks)
        if path.suffix == ".keras":
            import keras

            import vlbeit_keras  # noqa: F401  (registers classes and plugins)

            obj = keras.saving.load_model(path, compile=False)
        else:
            raise CheckpointError(
                f"{str(path)!r} is neither a converted/preset folder nor a .keras file."
            )
    if isinstance(obj, VLBEiTBackbone):
        return Conversion(backbone=obj, tasks={}, extras={}, report={}, source=None)
    backbone = getattr(obj, "backbone", None)
    if isinstance(backbone, VLBEiTBackbone):
        name = task_name_of(obj) or type(obj).__name__
        return Conversion(backbone=backbone, tasks={name: obj}, extras={}, report={}, source=None)
    raise CheckpointError(f"Cannot export a {type(obj).__name__}: not a VLBEiT backbone or task model.")
