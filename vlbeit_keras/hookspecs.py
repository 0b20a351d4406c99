"""Hook specifications of the ``vlbeit_keras`` plugin system (pluggy).

Every hook receives one keyword argument, ``register``: a callable the plugin
calls once per part it contributes, ``register(name, obj)`` (the style of
``simonw/llm``'s ``register_models(register)``). Every hook of every plugin is
called once per process, when the plugins load: at the end of
``import vlbeit_keras``, plugin by plugin in the loading order (built-ins
first, then entry-point plugins by name; see :mod:`vlbeit_keras.plugins`), so
every registry is complete before any model is built or loaded. Built-in parts
are registered through these same hooks by default plugins. A hook that raises
contributes nothing; the plugin is reported as failed (listing, warning).

A plugin is any module with functions decorated by :data:`hookimpl`::

    from vlbeit_keras import hookimpl

    @hookimpl
    def register_experts(register):
        register("swiglu", SwiGLUExpert)

and is made visible to ``vlbeit_keras`` by an entry point in its
``pyproject.toml``::

    [project.entry-points.vlbeit_keras]
    my_plugin = "my_package.plugin_module"

The entry-point name is the plugin name used in listings and error messages.
"""

import pluggy

PROJECT_NAME = "vlbeit_keras"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_experts(register):
    """Register feed-forward expert kinds for the MoME expert pool.

    Called: once, when the plugins load (``import vlbeit_keras``); the
    registry is read when a ``VLBEiTBackbone`` is built (also from a saved
    config) with ``expert_type=<name>``.

    ``register(name, expert_cls)``:
        name: str, the value users put in ``VLBEiTBackbone(expert_type=name)``.
        expert_cls: a ``keras.layers.Layer`` subclass. It is constructed as
            ``expert_cls(hidden_dim=int, intermediate_dim=int,
            layer_norm_epsilon=float, kernel_initializer=..., output_kernel_initializer=...,
            dtype=policy, name=str)`` and called as ``expert(x, training=bool)``
            with ``x`` of shape (batch, seq, hidden_dim) in the compute dtype; it
            returns the same shape. The expert owns its pre-FFN norm (VLMo's
            ``norm2_<modality>``); the block adds the shared layerscale and the
            residual. It must implement ``get_config``.
    """


@hookspec
def register_objectives(register):
    """Register pretraining objectives a pretrainer can combine.

    Called: once, when the plugins load (``import vlbeit_keras``); the
    registry is read by ``VLBEiTPretrainer`` construction and deserialization
    (objectives are rebuilt by name from the saved config).

    ``register(name, objective_cls)``:
        name: str, used in recipe configs (``objectives=("mlm", "mim", "mvlm")``);
            metrics are reported as ``<name>_<metric>``.
        objective_cls: a subclass of
            ``vlbeit_keras.objectives.base.PretrainingObjective``, built as
            ``objective_cls.from_config(config)``: it sets ``stream``
            (``"text"``, ``"image"`` or ``"image_text"``, the batch stream it
            reads) and ``metric_names`` (containing ``"loss"``), creates its
            weights in ``build(pretrainer)`` through
            ``pretrainer.shared_layer(name, factory)``, returns a dict of
            tensors from ``call(pretrainer, inputs, training)`` and float32
            scalars for every metric name from ``compute_loss(pretrainer,
            inputs, predictions)``; ``get_config`` returns JSON-ready
            constructor arguments (``docs/plugins.md``).
    """


@hookspec
def register_heads(register):
    """Register downstream fine-tuning tasks (VQA, NLVR2, retrieval, ...).

    Called: once, when the plugins load (``import vlbeit_keras``); the
    registry is read by the fine-tuning and evaluation recipes
    (``vlbeit_keras.tasks.get_task``).

    ``register(name, task)``:
        name: str, the task name used by ``recipes/finetune.py --task``
            (built in: ``vqa``, ``nlvr2``, ``nlvr``, ``retrieval``,
            ``image_classification``, ``image_text_classification``).
        task: a ``vlbeit_keras.tasks.TaskSpec`` whose ``name`` equals
            ``name``, bundling ``build_model(backbone, **config)`` (returns a
            compiled Keras model taking the backbone as a constructor
            argument, its loss owned through compile defaults or
            ``compute_loss``), ``make_dataset(records, *, tokenizer,
            image_config, text_length, batch_size, training, seed, **config)``
            (a tf.data dataset of model inputs from reader records, built on
            ``vlbeit_keras.data.pipeline``),
            ``evaluate(model, records, ...) -> (metrics, predictions)``,
            ``export_predictions(predictions, path)``, ``metric_names``,
            ``default_config`` and optionally ``example`` (synthetic records
            that let the registry-wide contract tests build, train, evaluate
            and round-trip the task). The task's Keras classes must be
            registered serializable and importable when the plugin loads.
            See ``docs/finetuning.md``.
    """


@hookspec
def register_datasets(register):
    """Register data sources (dataset readers) by name.

    Called: once, when the plugins load (``import vlbeit_keras``); the
    registry is read by recipes and ``vlbeit_keras.data.readers.read_dataset``.

    ``register(name, reader)``:
        name: str, e.g. ``"coco_captions"``, used as ``data.source`` in recipes.
        reader: a callable taking paths and options as keyword arguments
            (at least ``strict=False`` and ``report=None``, a shared
            ``vlbeit_keras.data.readers.SkipReport``) and returning a list of
            plain dict records (ideally a ``RecordList``) with the canonical
            keys: ``image`` (str path) or ``images`` (list of str), ``text``,
            ``image_id`` (str), ``split``, ``source`` (``"path:line"`` or
            ``"path#record"``), plus per-task keys (``answers``, ``answer``,
            ``question_id``, ``label``, ``identifier``). Bad records are
            skipped through ``report.skip(source, field, reason)``, which
            raises ``DataError`` in strict mode. Built-in readers are listed
            in ``docs/data.md`` ("Supported formats").
    """


@hookspec
def register_visual_tokenizers(register):
    """Register visual tokenizers (image -> discrete visual-token ids per patch).

    Called: once, when the plugins load (``import vlbeit_keras``); the
    registry is read for MIM targets in pretraining,
    ``recipes/train_visual_tokenizer.py`` and
    ``vlbeit_keras.data.visual_tokenizers.get_visual_tokenizer``.

    ``register(name, tokenizer_cls)``:
        name: str, used as ``tokenizer.type`` in recipe configs
            (built in: ``"random_projection"``, ``"kmeans"``).
        tokenizer_cls: a Keras layer class, ideally a subclass of
            ``vlbeit_keras.data.visual_tokenizers.VisualTokenizer``, constructed
            as ``tokenizer_cls(patch_size=int, codebook_size=int, **options)``.
            Contract (``docs/data.md``, "Visual tokenizers"): attributes
            ``patch_size`` and ``codebook_size``; ``tokenizer(images)`` with
            float (B, H, W, 3) in [-1, 1] (H, W multiples of ``patch_size``)
            returns int32 (B, (H / p) * (W / p)) ids in [0, codebook_size),
            row-major over the patch grid, computed with ``keras.ops`` only in
            float32, with non-trainable weights; ``get_config`` round-trips and
            the class is registered with
            ``keras.saving.register_keras_serializable``. Optional:
            ``fit_codebook(images, **kwargs) -> dict`` of usage statistics, used
            by the training recipe. Every registered tokenizer runs through
            ``tests/data/test_visual_tokenizers.py::test_contract``.
    """


@hookspec
def register_checkpoint_converters(register):
    """Register checkpoint converters (foreign weights -> vlbeit_keras).

    Called: once, when the plugins load (``import vlbeit_keras``); the
    registry is read by ``python -m vlbeit_keras convert --from <name>``.

    ``register(name, converter)``:
        name: str, the value of ``--from`` / ``--to``, e.g. ``"vlmo"``.
        converter: a :class:`vlbeit_keras.converters.CheckpointConverter`
            subclass (instantiated without arguments) or instance:
            ``read_checkpoint(path) -> dict key -> ndarray``;
            ``convert(state_dict, *, preset=None, overrides=None, tasks=None,
            **options) -> Conversion`` (backbone, task models, unmapped
            arrays, report; raises ``CheckpointError`` naming keys);
            optionally ``export(conversion) -> dict key -> ndarray``. The
            command writes the result atomically (see ``docs/checkpoints.md``).
    """
