"""VLMo (PyTorch) checkpoints <-> vlbeit_keras backbone and task models.

Registered as the ``"vlmo"`` checkpoint converter
(``python -m vlbeit_keras convert --from vlmo``). Names, layouts and the
architecture inference are in :mod:`vlbeit_keras.converters.vlmo_keys`; the
full table is in ``docs/checkpoints.md``.
"""

import inspect
import warnings

import numpy as np

from vlbeit_keras.converters import vlmo_keys as K
from vlbeit_keras.converters.base import CheckpointConverter
from vlbeit_keras.converters.base import Conversion
from vlbeit_keras.converters.state_dict_io import CheckpointError

# Backbone config fields fixed by the checkpoint's weights.
ARCHITECTURE_FIELDS = (
    "vocabulary_size", "num_layers", "num_heads", "hidden_dim", "intermediate_dim",
    "num_vl_layers", "patch_size", "position_mode", "relative_text_length",
)
# Where an inferred field comes from (for error messages).
_FIELD_SOURCES = {
    "vocabulary_size": "text_embeddings.word_embeddings.weight rows",
    "num_layers": "transformer.blocks.N keys",
    "num_heads": "relative_position_bias_table columns / layers",
    "hidden_dim": "transformer.cls_token",
    "intermediate_dim": "mlp_text.fc1.weight rows",
    "num_vl_layers": "blocks with mlp_vl keys",
    "patch_size": "transformer.patch_embed.proj.weight",
    "position_mode": "relative_position_bias_table vs transformer.pos_embed",
    "relative_text_length": "relative_position_bias_table rows",
    "layerscale_init": "gamma_1 / gamma_2 keys",
}


def backbone_fields():
    """Names of the ``VLBEiTBackbone`` constructor arguments (``--set`` fields)."""
    from vlbeit_keras.models.vlbeit_backbone import VLBEiTBackbone

    params = inspect.signature(VLBEiTBackbone.__init__).parameters
    return tuple(p for p in params if p not in ("self", "kwargs"))


def _pair(value):
    if value is None:
        return None
    if isinstance(value, (int, np.integer)):
        return [int(value), int(value)]
    h, w = value
    return [int(h), int(w)]


def resolve_config(state_dict, *, preset=None, overrides=None, source_image_size=None,
                   source_relative_text_length=None, source="checkpoint"):
    """(source config, target config) for converting a VLMo state dict.

    The source config is what the checkpoint was trained with
    (:func:`vlbeit_keras.converters.vlmo_keys.infer_source_config`). The
    target starts from it, or from the built-in ``preset`` (whose
    architecture must match the checkpoint), and takes ``overrides``.
    ``image_size``, ``max_text_length`` and ``num_modality_types`` may differ
    from the checkpoint (weights are adapted); ``num_modality_types`` keeps
    the checkpoint's rows unless overridden.

    Raises:
        CheckpointError: unknown preset or field, or the preset/overrides
            contradict the checkpoint (names the field, both values and the
            key it was read from).
    """
    from vlbeit_keras.models.presets import BACKBONE_PRESETS

    overrides = dict(overrides or {})
    known = backbone_fields()
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise CheckpointError(
            f"Unknown backbone field(s) {unknown} in --set; fields: {', '.join(known)}."
        )
    base = {}
    if preset is not None:
        if preset not in BACKBONE_PRESETS:
            raise CheckpointError(
                f"Unknown preset {preset!r}; built-in presets: {', '.join(BACKBONE_PRESETS)}."
            )
        base = dict(BACKBONE_PRESETS[preset]["config"])
    requested = {**base, **overrides}
    if "image_size" in requested:
        requested["image_size"] = _pair(requested["image_size"])

    def infer(l0_hint):
        return K.infer_source_config(
            state_dict,
            source=source,
            image_size_hint=_pair(source_image_size),
            relative_text_length_hint=l0_hint,
            num_heads_hint=requested.get("num_heads"),
            candidate_image_size=requested.get("image_size"),
        )

    if source_relative_text_length is None and "relative_text_length" in requested:
        try:  # the preset's L0 (e.g. 8 in vlbeit_tiny) reads the table first
            src = infer(requested["relative_text_length"])
        except CheckpointError:  # then VLMo's 196; a mismatch is reported below
            src = infer(None)
    else:
        src = infer(source_relative_text_length)
    target = dict(src)
    conflicts = []
    for field in ARCHITECTURE_FIELDS + ("layerscale_init",):
        if field not in requested:
            continue
        want, have = requested[field], src[field]
        if field == "relative_text_length" and src["position_mode"] == "absolute":
            src[field] = target[field] = want  # unused without a relative table
            continue
        if field == "layerscale_init":
            if (want is None) != (have is None):
                conflicts.append((field, want, "present" if have is not None else "None"))
            elif want is not None:
                target[field] = want
            continue
        if want != have:
            conflicts.append((field, want, have))
    if conflicts:
        origin = f"preset {preset!r}" if preset else "--set"
        lines = [
            f"{f}: {origin} has {w!r}, the checkpoint {h!r} (from {_FIELD_SOURCES.get(f, f)})"
            for f, w, h in conflicts
        ]
        advice = ("Omit --preset to infer the architecture from the checkpoint." if preset
                  else "Only image_size, max_text_length, num_modality_types and fields "
                  "without weights (drop_path_rate, dtype, ...) may differ.")
        raise CheckpointError(
            f"{source}: the checkpoint does not match the requested architecture: "
            + "; ".join(lines) + ". " + advice
        )
    for field, value in requested.items():
        if field in ARCHITECTURE_FIELDS or field == "layerscale_init":
            continue
        if field == "num_modality_types" and field not in overrides:
            continue  # the checkpoint's rows (3 for NLVR2) unless explicitly set
        target[field] = value
    if target.get("expert_type", "ffn") != "ffn":
        raise CheckpointError(
            f"VLMo checkpoints hold FFN experts; expert_type={target['expert_type']!r} cannot "
            "receive them."
        )
    return src, target


def _check_adaptable(state_dict, src, target):
    """VLMo-named errors for adaptations the resize utility cannot make."""
    t = target["max_text_length"]
    key = "text_embeddings.position_embeddings.weight"
    if src["position_mode"] == "absolute" and t > np.shape(state_dict[key])[0]:
        raise CheckpointError(
            f"max_text_length={t} exceeds the {np.shape(state_dict[key])[0]} absolute text "
            f"positions of {key!r}; use at most {np.shape(state_dict[key])[0]}."
        )
    rows, want = src["num_modality_types"], target["num_modality_types"]
    if want < rows:
        raise CheckpointError(
            f"num_modality_types={want} is smaller than the {rows} rows of "
            "'token_type_embeddings.weight'."
        )


def _resolve_attribute(model, path):
    obj = model
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _assign(targets, source):
    """Assign (key, variable, value, keras-shape-note) tuples; collect mismatches first."""
    mismatches = []
    for key, variable, value, note in targets:
        if tuple(variable.shape) != tuple(value.shape):
            mismatches.append(
                f"{key!r}: shape {note} -> {tuple(value.shape)} in Keras layout, but "
                f"{variable.path!r} needs {tuple(variable.shape)}"
            )
    if mismatches:
        raise CheckpointError(
            f"{source}: {len(mismatches)} shape mismatch(es): " + "; ".join(mismatches[:20])
            + (" ..." if len(mismatches) > 20 else "")
        )
    for _, variable, value, _ in targets:
        variable.assign(np.asarray(value).astype(variable.dtype))


def build_task(name, backbone, state_dict, answer_vocabulary=None):
    """The task model of VLMo head layout ``name``, sized from the head's keys.

    Args:
        name: ``"pretraining"``, ``"retrieval"``, ``"vqa"`` or ``"nlvr2"``.
        backbone: the converted ``VLBEiTBackbone`` (shared).
        state_dict: the checkpoint (head widths, ITM presence).
        answer_vocabulary: optional VQA answers.

    Returns:
        the model with freshly initialised heads (weights are assigned by
        :meth:`VLMoConverter.convert`).

    Raises:
        CheckpointError: the answer vocabulary does not fit the VQA head.
        ValueError: unknown ``name``.
    """
    if name == "pretraining":
        from vlbeit_keras.models.vlbeit_pretrainer import VLBEiTPretrainer

        return VLBEiTPretrainer(backbone, objectives=("mlm",))
    if name == "retrieval":
        from vlbeit_keras.tasks.retrieval import VLBEiTRetrieval

        return VLBEiTRetrieval(backbone, use_itm="itm_score.fc.weight" in state_dict)
    if name == "vqa":
        from vlbeit_keras.tasks.vqa import VLBEiTVQA

        num_answers, hidden = (int(np.shape(state_dict[f"vqa_classifier.{i}.weight"])[0]) for i in (3, 0))
        if answer_vocabulary is not None and len(answer_vocabulary) != num_answers:
            raise CheckpointError(
                f"The answer vocabulary has {len(answer_vocabulary)} answers but "
                f"'vqa_classifier.3.weight' has {num_answers} rows."
            )
        return VLBEiTVQA(backbone, answer_vocabulary=answer_vocabulary, num_answers=num_answers,
                         head_hidden_dim=hidden)
    if name == "nlvr2":
        from vlbeit_keras.tasks.nlvr2 import VLBEiTNLVR2

        num_classes, hidden = (int(np.shape(state_dict[f"nlvr2_classifier.{i}.weight"])[0]) for i in (3, 0))
        return VLBEiTNLVR2(backbone, num_classes=num_classes, head_hidden_dim=hidden)
    raise ValueError(f"Unknown VLMo task {name!r}; tasks: {K.TASK_NAMES}.")


def task_name_of(model):
    """The VLMo head layout of a vlbeit_keras model, or None."""
    from vlbeit_keras.models.vlbeit_pretrainer import VLBEiTPretrainer
    from vlbeit_keras.tasks.nlvr2 import VLBEiTNLVR2
    from vlbeit_keras.tasks.retrieval import VLBEiTRetrieval
    from vlbeit_keras.tasks.vqa import VLBEiTVQA

    for cls, name in ((VLBEiTPretrainer, "pretraining"), (VLBEiTRetrieval, "retrieval"),
                      (VLBEiTVQA, "vqa"), (VLBEiTNLVR2, "nlvr2")):
        if isinstance(model, cls):
            return name
    return None


class VLMoConverter(CheckpointConverter):
    """VLMo state dicts (``microsoft/unilm`` ``vlmo``) <-> vlbeit_keras models.

    Converts the backbone (MoME Transformer, relative or absolute
    positions, both text token-type tables, the pooler) and the heads
    present: MLM (``mlm_score`` -> :class:`~vlbeit_keras.VLBEiTPretrainer`
    ``mlm_head``), ITC + ITM (``itc_text_proj``, ``itc_image_proj``,
    ``logit_scale``, ``itm_score`` -> ``VLBEiTRetrieval``), VQA
    (``vqa_classifier`` -> ``VLBEiTVQA``), NLVR2 (``nlvr2_classifier`` and the
    3-row modality table -> ``VLBEiTNLVR2``). The key table is in
    ``docs/checkpoints.md``.
    """

    name = "vlmo"
    description = (
        "VLMo PyTorch state dicts (.pt/.pth/.npz): MoME backbone and the MLM, ITC/ITM, "
        "VQA and NLVR2 heads"
    )

    def convert(self, state_dict, *, preset=None, overrides=None, tasks=None,
                source_image_size=None, source_relative_text_length=None,
                allow_unexpected=False, answer_vocabulary=None, source="checkpoint"):
        """Build a backbone and task models holding ``state_dict``'s weights.

        Args:
            state_dict: dict VLMo key -> ``numpy.ndarray`` (PyTorch layouts).
            preset: built-in preset the checkpoint must match, or None to
                infer the architecture from key names and shapes.
            overrides: dict of backbone fields (``image_size``,
                ``max_text_length``, ``num_modality_types``,
                ``drop_path_rate``, ...). A different ``image_size`` resizes
                the relative table (BEiT geometric grid + bicubic spline) or
                the Base+ absolute table.
            tasks: task names to convert (``"pretraining"``, ``"retrieval"``,
                ``"vqa"``, ``"nlvr2"``); default all whose heads are present.
                Heads of other tasks are kept unused in the extras.
            source_image_size: (H, W) the checkpoint was trained at, when its
                table is ambiguous (non-square grids).
            source_relative_text_length: the checkpoint's L0 if not 196.
            allow_unexpected: keep unknown keys in the extras instead of
                raising.
            answer_vocabulary: list of VQA answers (index = class) or None.
            source: name of the checkpoint file for messages.

        Returns:
            :class:`~vlbeit_keras.converters.Conversion`.

        Raises:
            CheckpointError: missing keys, unexpected keys (unless
                ``allow_unexpected``), incomplete heads, shape mismatches,
                or a configuration that contradicts the checkpoint. Every
                message names the keys.
        """
        from vlbeit_keras.models.vlbeit_backbone import VLBEiTBackbone

        src, target = resolve_config(
            state_dict, preset=preset, overrides=overrides, source_image_size=source_image_size,
            source_relative_text_length=source_relative_text_length, source=source,
        )
        key_map = K.backbone_key_map(src)
        missing = [k for k in key_map if k not in state_dict]
        if missing:
            raise CheckpointError(
                f"{source}: {len(missing)} backbone key(s) missing: {', '.join(missing[:30])}"
                + (" ..." if len(missing) > 30 else "") + " (truncated or not a VLMo checkpoint?)."
            )
        K.check_shapes(src, state_dict, source)
        selected = self._select_tasks(state_dict, tasks, source)

        # Account for every key.
        used, unused, unexpected, ignored = set(key_map), {}, [], []
        for name in selected:
            used.update(k for k in K.HEAD_KEY_MAPS[name] if k in state_dict)
        head_owner = {k: name for name, keys in K.HEAD_KEY_MAPS.items() for k in keys}
        for key in state_dict:
            if key in used:
                continue
            if K.is_ignored(key):
                ignored.append(key)
            elif key in head_owner:
                unused[key] = (
                    f"head of task '{head_owner[key]}', not selected (--task)" if tasks is not None
                    else f"part of the '{head_owner[key]}' head, whose required keys are absent"
                )
            elif K.unused_reason(key):
                unused[key] = K.unused_reason(key)
            else:
                unexpected.append(key)
        if unexpected and not allow_unexpected:
            raise CheckpointError(
                f"{source}: {len(unexpected)} unexpected key(s) not in the VLMo layout: "
                f"{', '.join(unexpected[:30])}{' ...' if len(unexpected) > 30 else ''}. "
                "Pass --allow-unexpected to keep them (unused) in the extras file."
            )

        # Backbone: VLMo layout -> Keras layout at the checkpoint's sizes, then the
        # fine-tuning resize utility adapts grid- and length-dependent tables.
        from vlbeit_keras.utils import resize

        _check_adaptable(state_dict, src, target)
        arrays = {path: K.to_keras(state_dict[key], kind) for key, (path, kind) in key_map.items()}
        backbone = VLBEiTBackbone(**target)
        lacking = sorted(v.path for v in backbone.weights if v.path not in arrays)
        if lacking:
            raise CheckpointError(
                f"{source}: no VLMo key maps to backbone variable(s) {lacking[:10]}."
            )
        try:
            moved = resize.load_backbone_weights_resized(arrays, backbone, source_config=src)
        except ValueError as error:
            raise CheckpointError(f"{source}: {error}") from error
        shapes = {v.path: tuple(v.shape) for v in backbone.weights}
        resized = {
            path: f"{tuple(arrays[path].shape)} -> {shapes[path]}"
            + (f" ({resize.DEFAULT_METHOD})" if path == K.RELATIVE_TABLE_PATH else "")
            for path in moved["resized"]
        }
        del arrays

        # Heads.
        task_models = {}
        for name in selected:
            model = build_task(name, backbone, state_dict, answer_vocabulary)
            targets = []
            for key, (attr, kind) in K.HEAD_KEY_MAPS[name].items():
                if key not in state_dict:
                    continue  # optional part (ITM) absent: the model was built without it
                variable = _resolve_attribute(model, attr)
                targets.append((key, variable, K.to_keras(state_dict[key], kind),
                                tuple(np.shape(state_dict[key]))))
            _assign(targets, source)
            task_models[name] = model

        extras = {k: np.asarray(state_dict[k]) for k in list(unused) + unexpected}
        report = {
            "converter": self.name,
            "source": str(source),
            "source_config": src,
            "backbone_config": {k: v for k, v in backbone.get_config().items()
                                if k not in ("name", "trainable")},
            "tasks": {name: type(m).__name__ for name, m in task_models.items()},
            "num_keys": len(state_dict),
            "num_converted_keys": len(used),
            "resized": resized,
            "ignored": sorted(ignored),
            "unused": dict(sorted(unused.items())),
            "unexpected": sorted(unexpected),
        }
        return Conversion(backbone=backbone, tasks=task_models, extras=extras, report=report,
                          source=self.name)

    @staticmethod
    def _select_tasks(state_dict, tasks, source):
        present = K.head_keys_present(state_dict)
        requested = list(tasks) if tasks is not None else None
        for name in requested or ():
            if name not in K.HEAD_KEY_MAPS:
                raise CheckpointError(
                    f"Unknown task {name!r} for VLMo checkpoints; tasks: {', '.join(K.TASK_NAMES)}."
                )
            if name not in present:
                keys = ", ".join(k for k in K.HEAD_KEY_MAPS[name]
                                 if k not in K.HEAD_OPTIONAL_KEYS.get(name, ()))
                raise CheckpointError(
                    f"{source}: task {name!r} was requested but the checkpoint has none of its "
                    f"head keys ({keys})."
                )
        selected = []
        for name in requested if requested is not None else present:
            if name not in present or name in selected:
                continue
            optional = K.HEAD_OPTIONAL_KEYS.get(name, ())
            missing = [k for k in K.HEAD_KEY_MAPS[name] if k not in state_dict and k not in optional]
            if missing:
                if requested is None and name == "retrieval" and set(present[name]) <= set(optional):
                    continue  # an ITM head alone (no ITC): nothing to build; reported unused
                raise CheckpointError(
                    f"{source}: the {name} head is incomplete; missing key(s): {', '.join(missing)}."
                )
            selected.append(name)
        return selected

    def export(self, conversion):
        """VLMo-named state dict (PyTorch layouts) of ``conversion``.

        Backbone variables and the heads of ``conversion.tasks`` are written
        under their VLMo names; ``text_embeddings.position_ids`` (int64
        ``arange(T)``) is added; ``conversion.extras`` (unused source keys)
        are added unchanged, except that in relative mode the unused text
        position table is cut or zero-padded to ``max_text_length`` rows
        (zeros when it is absent), as VLMo's ``BertEmbeddings`` allocates it.
        Task variables without a VLMo counterpart (MIM head, [MASK]
        embedding) are skipped with a warning.

        Returns:
            dict VLMo key -> ``numpy.ndarray``.
        """
        from keras import ops

        backbone = conversion.backbone
        config = backbone.get_config()
        out = {}
        variables = {v.path: v for v in backbone.weights}
        for key, (path, kind) in K.backbone_key_map(config).items():
            out[key] = K.to_vlmo(ops.convert_to_numpy(variables[path]), kind)
        extras = dict(conversion.extras or {})
        t, d = backbone.max_text_length, backbone.hidden_dim
        if backbone.position_mode == "relative":
            table = np.asarray(extras.pop("text_embeddings.position_embeddings.weight",
                                          np.zeros((t, d), np.float32)))
            if table.shape[0] >= t:
                table = table[:t]
            else:
                table = np.concatenate([table, np.zeros((t - table.shape[0], d), table.dtype)])
            out["text_embeddings.position_embeddings.weight"] = table
        out["text_embeddings.position_ids"] = np.arange(t, dtype=np.int64)[None]
        skipped = []
        for name, model in (conversion.tasks or {}).items():
            layout = task_name_of(model) or name
            if layout not in K.HEAD_KEY_MAPS:
                skipped.append(f"task {name!r} ({type(model).__name__}): no VLMo head layout")
                continue
            exported = set()
            for key, (attr, kind) in K.HEAD_KEY_MAPS[layout].items():
                variable = _resolve_attribute(model, attr)
                if variable is None:
                    continue
                out[key] = K.to_vlmo(ops.convert_to_numpy(variable), kind)
                exported.add(id(variable))
            backbone_ids = {id(v) for v in backbone.weights}
            skipped += [
                f"{name}: {v.path}" for v in model.trainable_weights
                if id(v) not in exported and id(v) not in backbone_ids
            ]
        for key, value in extras.items():
            out.setdefault(key, np.asarray(value))
        if skipped:
            warnings.warn(
                "Not exported (no VLMo counterpart): " + ", ".join(skipped), stacklevel=2
            )
        return out


def load_vlmo_state_dict_into_backbone(backbone, state_dict, strict=True):
    """Copy VLMo-named arrays into an existing ``backbone`` (same shapes).

    Lower-level than :class:`VLMoConverter` (no inference, no resizing).

    Args:
        backbone: a built :class:`~vlbeit_keras.VLBEiTBackbone`.
        state_dict: mapping VLMo key -> array, PyTorch layouts.
        strict: raise if a backbone variable has no source key.

    Returns:
        list of VLMo keys that were not used (heads, unused tables), index
        buffers excluded.

    Raises:
        ValueError: a shape does not match (names the key and both shapes),
            or (``strict``) backbone variables are missing from the checkpoint.
    """
    key_map = K.backbone_key_map(backbone.get_config())
    variables = {v.path: v for v in backbone.weights}
    assigned, unused = set(), []
    for key, value in state_dict.items():
        if key not in key_map:
            if not K.is_ignored(key):
                unused.append(key)
            continue
        path, kind = key_map[key]
        value = K.to_keras(value, kind)
        var = variables[path]
        if tuple(var.shape) != tuple(value.shape):
            raise ValueError(
                f"Checkpoint key '{key}' has shape {tuple(np.shape(state_dict[key]))} "
                f"(-> {tuple(value.shape)} after transposition) but variable "
                f"'{path}' has shape {tuple(var.shape)}."
            )
        var.assign(value.astype(var.dtype))
        assigned.add(path)
    missing = sorted(set(variables) - assigned)
    if strict and missing:
        inverse = {p: k for k, (p, _) in key_map.items()}
        raise ValueError(
            "Checkpoint lacks weights for: "
            + ", ".join(f"{p} (VLMo key '{inverse.get(p, '?')}')" for p in missing)
        )
    return unused


# Backwards-compatible names.
is_ignored = K.is_ignored
IGNORED_KEY_PATTERNS = K.IGNORED_KEY_PATTERNS
