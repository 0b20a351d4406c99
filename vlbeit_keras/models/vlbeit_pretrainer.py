"""VLBEiTPretrainer: one-stage MLM + MIM + MVLM pretraining with ``model.fit``."""

import keras
from keras import ops

from vlbeit_keras.plugins import get_registry

DEFAULT_OBJECTIVES = ("mlm", "mim", "mvlm")


def _normalize_objectives(objectives):
    """Accept "mlm", ("mvlm", {...}) or {"name": ..., **config} entries."""
    specs = []
    for entry in objectives:
        if isinstance(entry, str):
            name, config = entry, {}
        elif isinstance(entry, dict):
            config = dict(entry)
            name = config.pop("name", None)
            config = config.pop("config", config)
        else:
            name, config = entry
        if not isinstance(name, str):
            raise ValueError(f"Objective entry {entry!r} has no name.")
        specs.append({"name": name, "config": dict(config)})
    names = [s["name"] for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"Objectives listed twice: {names}.")
    if not specs:
        raise ValueError("`objectives` is empty; name at least one registered objective.")
    return specs


@keras.saving.register_keras_serializable(package="vlbeit_keras")
class VLBEiTPretrainer(keras.Model):
    """VL-BEiT generative pretraining model (Bao et al. 2022, Sec. 2.2).

    Combines registered pretraining objectives (``"mlm"``, ``"mim"``,
    ``"mvlm"`` built in; plugins add more) over one shared backbone. Each
    objective reads one stream of the batch; the batch is a dict of streams::

        {"text": {...MLM fields}, "image": {...MIM fields}, "image_text": {...MVLM fields}}

    (fields in ``docs/pretraining.md``; produced by
    ``vlbeit_keras.data.pipeline``). A stream missing from a batch skips the
    objectives that read it. Targets travel inside ``x``; the model owns its
    loss by overriding ``compute_loss`` (runs unchanged on TensorFlow, JAX and
    PyTorch; no custom ``train_step``), reports ``<objective>_<metric>``
    running means (e.g. ``mlm_loss``, ``mim_accuracy``, ``mvlm_text_accuracy``)
    and the weighted total as ``loss``.

    Shared layers (heads, [MASK] embedding) are created by the objectives
    through :meth:`shared_layer`, all at construction, so the model is built
    before the first batch and ``.keras`` files restore every weight.

    Args:
        backbone: a ``VLBEiTBackbone``.
        objectives: sequence of objective names or ``(name, config)`` pairs
            or ``{"name": ..., **config}`` dicts, e.g.
            ``("mlm", "mim", ("mvlm", {"text_weight": 1.0}))``.
        visual_tokenizer: a Keras layer mapping images (B, H, W, 3) in [-1, 1]
            to int32 ids (B, N) over ``visual_tokenizer.codebook_size`` codes;
            frozen (MIM targets). Required by MIM and MVLM.

    Raises:
        UnknownNameError: an objective name is not registered (lists known ones).
        ValueError: malformed objective list, or MIM/MVLM without tokenizer.

    Example:
    ```python
    pretrainer = VLBEiTPretrainer(backbone, objectives=("mlm",))
    pretrainer.compile()          # AdamW with VL-BEiT weight-decay groups
    pretrainer.fit(dataset, epochs=1)
    ```
    """

    def __init__(self, backbone, objectives=DEFAULT_OBJECTIVES, visual_tokenizer=None, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.visual_tokenizer = visual_tokenizer
        if visual_tokenizer is not None:
            visual_tokenizer.trainable = False
            if not visual_tokenizer.built:
                visual_tokenizer.build((None, *backbone.image_size, 3))
        self.objective_specs = _normalize_objectives(objectives)
        registry = get_registry("objectives")
        self._objectives = {}
        for spec in self.objective_specs:
            self._objectives[spec["name"]] = registry.get(spec["name"]).from_config(spec["config"])
        self._shared_layers = {}
        for objective in self._objectives.values():
            objective.build(self)
        trackers = []
        self._trackers = {}
        for name, objective in self._objectives.items():
            for metric in objective.metric_names:
                tracker = keras.metrics.Mean(name=f"{name}_{metric}")
                self._trackers[(name, metric)] = tracker
                trackers.append(tracker)
        self.objective_metrics = trackers
        self.built = True

    @property
    def objectives(self):
        """Objective instances by name (insertion order = config order)."""
        return dict(self._objectives)

    def shared_layer(self, name, factory):
        """Return the shared layer ``name``, creating it with ``factory()`` once.

        The layer becomes an attribute of the pretrainer (so its weights are
        tracked and saved under ``name``).

        Raises:
            ValueError: ``name`` clashes with an existing attribute.
        """
        if name not in self._shared_layers:
            if hasattr(self, name):
                raise ValueError(f"Shared layer name {name!r} clashes with an attribute of the pretrainer.")
            layer = factory()
            self._shared_layers[name] = layer
            setattr(self, name, layer)
        return self._shared_layers[name]

    def call(self, inputs, training=False):
        outputs = {}
        for name, objective in self._objectives.items():
            if objective.stream in inputs:
                outputs[name] = objective.call(self, inputs[objective.stream], training=training)
        return outputs

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if y_pred is None:
            y_pred = self(x, training=training)
        total = ops.convert_to_tensor(0.0, "float32")
        for name, objective in self._objectives.items():
            if name not in y_pred:
                continue
            values = objective.compute_loss(self, x[objective.stream], y_pred[name])
            total = total + objective.weight * ops.cast(values["loss"], "float32")
            for metric in objective.metric_names:
                count = values.get(f"{metric}_count")
                self._trackers[(name, metric)].update_state(values[metric], sample_weight=count)
        if self.losses:
            total = total + ops.cast(ops.sum(self.losses), "float32")
        return total

    # --- training health (vlbeit_keras.training.health) ----------------
    def chance_losses(self, batch_size=None):
        """``<objective>_<loss>`` -> chance value (nats) of every objective
        that defines one (:meth:`PretrainingObjective.chance_losses`)."""
        out = {}
        for name, objective in self._objectives.items():
            for metric, value in objective.chance_losses(self).items():
                out[f"{name}_{metric}"] = float(value)
        return out

    def health_features(self, x):
        """Pooled backbone features of each stream in ``x`` (the backbone's
        ``pooling``; inference mode, inputs as the streams carry them):
        ``text_pooled_output``, ``image_pooled_output`` (B, d) and the fused
        ``pooled_output``."""
        b, out = self.backbone, {}
        if "text" in x:
            t = x["text"]
            out["text_pooled_output"] = b.encode_text(t["token_ids"], t["padding_mask"])["text_pooled_output"]
        if "image" in x:
            out["image_pooled_output"] = b.encode_image(x["image"]["images"])["image_pooled_output"]
        if "image_text" in x:
            p = x["image_text"]
            out["pooled_output"] = b.encode_image_text(
                p["token_ids"], p["padding_mask"], p["images"])["pooled_output"]
        return out

    def compile(self, optimizer="auto", apply_weight_decay_groups=True, **kwargs):
        """Compile with VL-BEiT defaults.

        ``optimizer="auto"`` builds :func:`vlbeit_keras.optimizers.pretraining_optimizer`
        (AdamW (0.9, 0.98), wd 0.05 with the no-decay groups, clip 3.0,
        constant lr 1e-3); pass your own (e.g. with a warm-up cosine
        schedule) for real runs. With ``apply_weight_decay_groups`` an
        unbuilt optimizer without exclusions gets the BEiT no-decay rule
        (:func:`vlbeit_keras.optimizers.no_weight_decay_variables`). No
        ``loss`` argument: the model owns its loss.
        """
        from vlbeit_keras.optimizers import apply_no_weight_decay_groups
        from vlbeit_keras.optimizers import pretraining_optimizer

        if optimizer == "auto":
            optimizer = pretraining_optimizer(self)
        else:
            optimizer = keras.optimizers.get(optimizer)
            if apply_weight_decay_groups:
                apply_no_weight_decay_groups(optimizer, self)
        super().compile(optimizer=optimizer, **kwargs)

    def get_compile_config(self):
        if not self.compiled:
            return None
        return {"optimizer": keras.optimizers.serialize(self.optimizer)}

    def compile_from_config(self, config):
        optimizer = keras.optimizers.deserialize(config["optimizer"])
        self.compile(optimizer=optimizer)
        self.optimizer.build(self.trainable_variables)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.layers.serialize(self.backbone),
            "objectives": [dict(s) for s in self.objective_specs],
            "visual_tokenizer": None
            if self.visual_tokenizer is None
            else keras.layers.serialize(self.visual_tokenizer),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        # An already-built backbone may be passed (loading a converted folder shares one).
        if isinstance(config["backbone"], dict):
            config["backbone"] = keras.layers.deserialize(config["backbone"])
        if isinstance(config.get("visual_tokenizer"), dict):
            config["visual_tokenizer"] = keras.layers.deserialize(config["visual_tokenizer"])
        return cls(**config)
