"""The fine-tuning task contract and the base class of task models.

A *task* is registered through the ``register_heads`` plugin hook as a
:class:`TaskSpec`: one object a recipe can drive without knowing the task::

    spec = vlbeit_keras.get_registry("heads").get("vqa")
    model = spec.build_model(backbone, **task_config)          # compiled
    io = {"tokenizer": tokenizer, "text_length": model.backbone.max_text_length}
    train = spec.make_dataset(records, image_config=train_images, batch_size=32,
                              training=True, seed=0, **io, **task_config)
    model.fit(train, steps_per_epoch=..., epochs=...)
    metrics, predictions = spec.evaluate(model, eval_records, image_config=eval_images,
                                         batch_size=64, **io, **task_config)
    spec.export_predictions(predictions, "results.json")

Every task model subclasses :class:`VLBEiTTaskModel`: a ``keras.Model`` that
takes the backbone as a constructor argument and serialises it with
``keras.layers.serialize`` (keras-hub ``Task`` style), builds all weights at
construction, owns its loss either through ``compile`` defaults (standard
losses) or a ``compute_loss`` override (retrieval), never a custom
``train_step``, so ``model.fit`` runs unchanged on TensorFlow, JAX and
PyTorch.
"""

import dataclasses
from typing import Any
from typing import Callable
from typing import Mapping

import keras

from vlbeit_keras.models.vlbeit_backbone import VLBEiTBackbone

# Name of the relative-position-bias interpolation (vlbeit_keras.utils.resize).
DEFAULT_RESIZE_METHOD = "beit_geometric_cubic"


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """What a fine-tuning task registers (``register_heads(register)``).

    Attributes:
        name: registry name (``"vqa"``, ``"nlvr2"``, ...), the recipes'
            ``--task``.
        description: one line for listings.
        model_cls: the ``keras.Model`` subclass (for ``load_model`` and docs).
        build_model: ``fn(backbone, **config) -> compiled keras.Model``.
            Takes a pretrained backbone and the task config; adapts the
            backbone when the task needs it (image size, modality rows) and
            returns a model compiled with the task's default loss, metrics
            and optimizer (recipes may ``compile`` again).
        make_dataset: data adapter, ``fn(records, *, tokenizer, image_config,
            text_length, batch_size, training=False, seed=0, start_step=0,
            report=None, **config) -> tf.data.Dataset`` of ``(x, y)`` (or
            ``x`` for tasks whose model owns its targets), built on
            ``vlbeit_keras.data.pipeline``; training datasets are infinite.
            ``records`` follow the reader schema (``vlbeit_keras.tasks.data``).
        evaluate: ``fn(model, records, *, tokenizer, image_config,
            batch_size, report=None, **config) -> (metrics, predictions)``;
            ``metrics`` is a dict of numbers named in ``metric_names``.
        export_predictions: ``fn(predictions, path) -> path``, writes the
            benchmark's own format.
        record_keys: record fields the adapter reads.
        metric_names: keys of the ``metrics`` dict ``evaluate`` returns.
        default_config: the task config's defaults (documented per task).
        example: optional ``fn(num_records, image_size, seed) -> (records,
            config)``: small synthetic records in the reader schema plus the
            config fields they need (e.g. an answer vocabulary). The
            registry-wide contract tests build, train, evaluate, export and
            round-trip every registered task with it, plugins included.
        baseline: optional ``fn(train_records, eval_records, **config) ->
            metrics``: the task's trivial baseline (majority answer / class /
            label learned from ``train_records``, or chance for retrieval),
            scored on ``eval_records`` with the same metric as ``evaluate``
            and returning the same keys. The fine-tuning recipe prints it
            next to the model's metrics.
        prediction_file: file name the recipes give the file written by
            ``export_predictions`` (its extension says the format).
    """

    name: str
    description: str
    model_cls: type
    build_model: Callable[..., Any]
    make_dataset: Callable[..., Any]
    evaluate: Callable[..., Any]
    export_predictions: Callable[..., Any]
    record_keys: tuple = ()
    metric_names: tuple = ()
    default_config: Mapping = dataclasses.field(default_factory=dict)
    example: Callable[..., Any] = None
    baseline: Callable[..., Any] = None
    prediction_file: str = "predictions.json"

    def config(self, **overrides):
        """``default_config`` updated with ``overrides`` (unknown keys raise)."""
        unknown = sorted(set(overrides) - set(self.default_config))
        if unknown:
            raise ValueError(
                f"Unknown config field(s) {unknown} for task '{self.name}'. "
                f"Known fields: {sorted(self.default_config)}."
            )
        return {**self.default_config, **overrides}


def head_initializer(backbone):
    """N(0, ``backbone.initializer_range``): the kernel initialisation of task
    heads (VLMo: N(0, 0.02), the ``initializer_range`` of its base model)."""
    return keras.initializers.RandomNormal(stddev=backbone.initializer_range)


def random_image(rng, image_size):
    """uint8 (H, W, 3) noise image for synthetic examples."""
    return rng.integers(0, 256, (*image_size, 3), dtype="uint8")


EXAMPLE_WORDS = ("a red blue green circle square triangle is there left right of the "
                 "what color shape how many yes no one two three").split()


def random_sentence(rng, length=5):
    """A sentence of ``length`` words from :data:`EXAMPLE_WORDS`."""
    return " ".join(rng.choice(EXAMPLE_WORDS, size=length))


def check_inputs(inputs, keys, model_name):
    """Raise a clear error when a model input dict lacks a key."""
    if not isinstance(inputs, dict):
        raise TypeError(
            f"{model_name} takes a dict of inputs with keys {list(keys)}; "
            f"got {type(inputs).__name__}."
        )
    missing = [k for k in keys if k not in inputs]
    if missing:
        raise KeyError(
            f"{model_name} inputs lack {missing}; expected keys {list(keys)}, "
            f"got {sorted(inputs)}."
        )


@keras.saving.register_keras_serializable(package="vlbeit_keras")
class VLBEiTTaskModel(keras.Model):
    """Base class: a task model wrapping a :class:`VLBEiTBackbone`.

    Subclasses create their heads in ``__init__`` (with
    ``dtype=self.dtype_policy``) and build them there, implement ``call``,
    add their hyper-parameters to ``get_config`` and define the compile
    defaults (:meth:`default_loss`, :meth:`default_metrics`,
    :meth:`default_optimizer`).

    Args:
        backbone: a ``VLBEiTBackbone`` (or a config dict from
            ``keras.layers.serialize``).
        dtype: dtype policy of the heads (default: the backbone's).
        name: model name.

    Raises:
        TypeError: ``backbone`` is not a ``VLBEiTBackbone``.
    """

    backbone_cls = VLBEiTBackbone

    def __init__(self, backbone, **kwargs):
        if isinstance(backbone, dict):
            backbone = keras.layers.deserialize(backbone)
        if not isinstance(backbone, VLBEiTBackbone):
            raise TypeError(
                f"{type(self).__name__} needs a VLBEiTBackbone; got {type(backbone).__name__}."
            )
        kwargs.setdefault("dtype", backbone.dtype_policy)
        super().__init__(**kwargs)
        self.backbone = backbone

    def build(self, input_shape=None):
        # All weights are created in __init__.
        self.built = True

    # --- training health (vlbeit_keras.training.health) ----------------
    def health_features(self, inputs):
        """Pooled features the heads read, for the collapse check of
        :class:`~vlbeit_keras.training.health.TrainingHealthMonitor`:
        dict name -> float (B, d). Default: none."""
        return {}

    def chance_losses(self, batch_size=None):
        """Logged loss name -> its chance value in nats (the loss of a model
        that ignores the input). Default: none."""
        return {}

    # --- compile defaults -----------------------------------------------
    def default_loss(self):
        return None

    def default_metrics(self):
        return None

    def default_optimizer(self):
        from vlbeit_keras.tasks.optimization import finetune_optimizer

        return finetune_optimizer(self)

    def compile(self, optimizer="auto", loss="auto", metrics="auto", **kwargs):
        """``keras.Model.compile`` with task defaults for ``"auto"`` values.

        Args:
            optimizer: ``"auto"`` (AdamW as VLMo fine-tunes, with decay
                exclusions and the task's head lr multiplier, see
                :func:`vlbeit_keras.tasks.optimization.finetune_optimizer`) or
                any Keras optimizer.
            loss: ``"auto"`` (the task's loss) or any Keras loss.
            metrics: ``"auto"`` (the task's training metrics) or a list.
            **kwargs: passed to ``keras.Model.compile``.
        """
        if isinstance(optimizer, str) and optimizer == "auto":
            optimizer = self.default_optimizer()
        if isinstance(loss, str) and loss == "auto":
            loss = self.default_loss()
        if isinstance(metrics, str) and metrics == "auto":
            metrics = self.default_metrics()
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def compile_from_config(self, config):
        """Re-compile from ``get_compile_config()`` when a ``.keras`` file loads."""
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.optimizer is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    # --- serialisation --------------------------------------------------
    def get_config(self):
        return {
            "backbone": keras.layers.serialize(self.backbone),
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("backbone"), dict):
            config["backbone"] = keras.layers.deserialize(config["backbone"])
        return cls(**config)


def maybe_resize_backbone(backbone, image_size=None, num_modality_types=None,
                          method=DEFAULT_RESIZE_METHOD):
    """The backbone adapted to a fine-tuning image size / modality rows.

    Returns ``backbone`` itself when nothing changes, otherwise a new
    backbone with the weights transferred
    (:func:`vlbeit_keras.utils.resize.rebuild_backbone`).
    """
    from vlbeit_keras.utils import resize

    overrides = {}
    if image_size is not None:
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if tuple(backbone.image_size) != size:
            overrides["image_size"] = list(size)
    if num_modality_types is not None and backbone.num_modality_types < num_modality_types:
        overrides["num_modality_types"] = int(num_modality_types)
    if not overrides:
        return backbone
    return resize.rebuild_backbone(backbone, method=method, **overrides)
