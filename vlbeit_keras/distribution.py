"""Data and model parallelism for VL-BEiT on Keras' own distribution engine.

Everything here is a thin layer over ``keras.distribution`` (JAX backend):

- :func:`initialize_multi_host` joins a multi-host job through
  ``keras.distribution.initialize`` (``jax.distributed`` underneath);
- :func:`vlbeit_layout_map` shards the attention and expert kernels by their
  variable paths (Megatron-style column/row split, see below);
- :func:`make_distribution` builds ``keras.distribution.DataParallel`` or
  ``keras.distribution.ModelParallel`` from a config;
- :func:`data_shard` says which slice of every global batch this process
  reads, so the input pipeline of each host decodes only its own examples
  (``vlbeit_keras.data.pipeline.make_pretraining_dataset(num_shards=...,
  shard_index=...)``).

The pretraining recipe (``recipes/pretrain.py``) calls
:func:`setup_distribution` with the config's ``distribution`` section before
it builds any model, since Keras places variables when they are created;
from Python (e.g. fine-tuning), call it the same way before building.
See ``docs/scaling.md``.

Multi-host environment variables (read by ``keras.distribution.initialize``;
set the same values on every host except the process id):

==================================  ===============================================
``KERAS_DISTRIBUTION_JOB_ADDRESSES``  ``host:port`` of process 0 (the coordinator);
                                      a comma-separated list of all hosts also works
                                      (JAX uses the first entry)
``KERAS_DISTRIBUTION_NUM_PROCESSES``  number of processes (hosts) in the job
``KERAS_DISTRIBUTION_PROCESS_ID``     this process, 0 .. num_processes - 1
==================================  ===============================================

On Cloud TPU pods and SLURM clusters JAX finds these itself; set
``distribution.multi_host=True`` and leave the variables unset.
"""

import math
import os

import keras

KINDS = ("none", "data_parallel", "model_parallel")
ENV_JOB_ADDRESSES = "KERAS_DISTRIBUTION_JOB_ADDRESSES"
ENV_NUM_PROCESSES = "KERAS_DISTRIBUTION_NUM_PROCESSES"
ENV_PROCESS_ID = "KERAS_DISTRIBUTION_PROCESS_ID"
MULTI_HOST_ENV = (ENV_JOB_ADDRESSES, ENV_NUM_PROCESSES, ENV_PROCESS_ID)

# Variable-path rules of the model-parallel layout (regexes, ``re.fullmatch``
# against ``variable.path``; an optional prefix lets them match inside task
# models too). Each maps to (layout axes, which size must divide by the
# model-axis size). "col" = split the output features, "row" = split the input
# features; a column-parallel kernel followed by a row-parallel one needs one
# all-reduce per sub-block (Shoeybi et al. 2019, Megatron-LM, Sec. 3).
_PREFIX = r"(?:.*/)?"
_BLOCK = _PREFIX + r"transformer/blocks_\d+/"
_EXPERT = _BLOCK + r"mlp_[a-z]+/"


def _rules(model_axis):
    m = model_axis
    return (
        # Shared self-attention: qkv column-parallel, proj row-parallel.
        (_BLOCK + r"attn/qkv/kernel", (None, m), "qkv"),
        (_BLOCK + r"attn/q_bias", (m,), "hidden"),
        (_BLOCK + r"attn/v_bias", (m,), "hidden"),
        (_BLOCK + r"attn/proj/kernel", (m, None), "hidden"),
        # Every modality expert (mlp_text, mlp_imag, mlp_vl, plugin experts
        # named mlp_<slot>): fc1 column-parallel, fc2 row-parallel.
        (_EXPERT + r"fc1/kernel", (None, m), "intermediate"),
        (_EXPERT + r"fc1/bias", (m,), "intermediate"),
        (_EXPERT + r"fc2/kernel", (m, None), "intermediate"),
        # Vocabulary-sized matrices: split the vocabulary.
        (_PREFIX + r"text_embeddings/word_embeddings/embeddings", (m, None), "vocabulary"),
        (_PREFIX + r"mlm_head/output_kernel", (None, m), "vocabulary"),
        (_PREFIX + r"mlm_head/output_bias", (m,), "vocabulary"),
        (_PREFIX + r"mim_head/dense/kernel", (None, m), "codebook"),
        (_PREFIX + r"mim_head/dense/bias", (m,), "codebook"),
    )


def _require_jax(what):
    backend = keras.backend.backend()
    if backend != "jax":
        raise ValueError(
            f"{what} uses keras.distribution, which Keras {keras.version()} implements "
            f"for the JAX backend only; the current backend is {backend!r}. Run with "
            "KERAS_BACKEND=jax (or set distribution.kind='none')."
        )


def multi_host_requested(multi_host=None):
    """Whether this process is part of a multi-host job.

    True when ``multi_host`` is True, or when it is None and any of the
    ``KERAS_DISTRIBUTION_*`` variables is set.
    """
    if multi_host is not None:
        return bool(multi_host)
    return any(os.environ.get(name) for name in MULTI_HOST_ENV)


def initialize_multi_host(multi_host=None, job_addresses=None, num_processes=None, process_id=None):
    """Join a multi-host job with ``keras.distribution.initialize`` (once).

    Must run before any JAX computation. Arguments left None are read by
    Keras from ``KERAS_DISTRIBUTION_JOB_ADDRESSES``,
    ``KERAS_DISTRIBUTION_NUM_PROCESSES`` and ``KERAS_DISTRIBUTION_PROCESS_ID``
    (module docstring). A single-host run (no argument, no variable) does
    nothing.

    Args:
        multi_host: True forces initialisation (e.g. TPU pods, where JAX
            discovers the cluster), False skips it, None decides from the
            environment.
        job_addresses, num_processes, process_id: as
            ``keras.distribution.initialize``.

    Returns:
        (process_index, process_count) after initialisation.

    Raises:
        ValueError: multi-host requested on a backend other than JAX.
    """
    if multi_host_requested(multi_host) or job_addresses or num_processes:
        _require_jax("Multi-host training")
        import jax

        if not jax.distributed.is_initialized():
            keras.distribution.initialize(job_addresses, num_processes, process_id)
        return jax.process_index(), jax.process_count()
    return 0, 1


def _mesh_shape(num_devices, model_parallel_size):
    if model_parallel_size < 1 or num_devices % model_parallel_size:
        raise ValueError(
            f"`model_parallel_size`={model_parallel_size} must be a positive divisor of "
            f"the number of devices ({num_devices})."
        )
    return (num_devices // model_parallel_size, model_parallel_size)


def device_mesh(model_parallel_size=1, devices=None, axis_names=("batch", "model")):
    """A 2-D ``keras.distribution.DeviceMesh`` (batch, model) over all devices.

    Args:
        model_parallel_size: devices per model replica (the ``model`` axis).
        devices: list of device names; default every device of the job
            (``keras.distribution.list_devices()``, all hosts).
        axis_names: names of the two mesh axes.

    Raises:
        ValueError: ``model_parallel_size`` does not divide the device count.
    """
    devices = list(devices or keras.distribution.list_devices())
    shape = _mesh_shape(len(devices), int(model_parallel_size))
    return keras.distribution.DeviceMesh(shape=shape, axis_names=axis_names, devices=devices)


def vlbeit_layout_map(mesh, hidden_dim, intermediate_dim, vocabulary_size=None,
                      codebook_size=None, model_axis="model"):
    """``keras.distribution.LayoutMap`` sharding VL-BEiT's big kernels on ``model_axis``.

    Rules (variable paths, docs/architecture.md; every MoME block ``l``):

    ===========================================  ==============  =========
    variable path                                layout          split
    ===========================================  ==============  =========
    ``transformer/blocks_l/attn/qkv/kernel``     (None, model)   columns
    ``transformer/blocks_l/attn/{q,v}_bias``     (model,)
    ``transformer/blocks_l/attn/proj/kernel``    (model, None)   rows
    ``transformer/blocks_l/mlp_*/fc1/kernel``    (None, model)   columns
    ``transformer/blocks_l/mlp_*/fc1/bias``      (model,)
    ``transformer/blocks_l/mlp_*/fc2/kernel``    (model, None)   rows
    ``text_embeddings/word_embeddings/...``      (model, None)   vocabulary
    ``mlm_head/output_kernel``, ``output_bias``  (.., model)     vocabulary
    ``mim_head/dense/kernel``, ``bias``          (.., model)     codebook
    ===========================================  ==============  =========

    ``mlp_*`` covers the L-FFN (``mlp_text``), V-FFN (``mlp_imag``) and VL-FFN
    (``mlp_vl``) of every block. A rule is left out (the variable stays
    replicated) when the size it splits is not a multiple of the model-axis
    size (JAX shards evenly only), e.g. BERT's 30,522-word vocabulary on 4
    devices. Everything else (LayerNorms, layerscale, embeddings of positions
    and modality types, the relative-position table, the pooler) is
    replicated. Optimizer slots inherit their variable's layout.

    Args:
        mesh: ``keras.distribution.DeviceMesh`` with an axis ``model_axis``.
        hidden_dim, intermediate_dim: backbone sizes.
        vocabulary_size: word vocabulary (None: leave word tables replicated).
        codebook_size: visual-token vocabulary of the MIM head (None: replicated).
        model_axis: name of the mesh axis that splits the model.

    Returns:
        ``keras.distribution.LayoutMap`` (it carries ``mesh``:
        ``ModelParallel`` takes its mesh from here, keras issue #18983).
    """
    if model_axis not in mesh.axis_names:
        raise ValueError(f"Mesh axes {mesh.axis_names} have no model axis {model_axis!r}.")
    size = mesh.shape[list(mesh.axis_names).index(model_axis)]
    dims = {
        "qkv": 3 * int(hidden_dim),
        "hidden": int(hidden_dim),
        "intermediate": int(intermediate_dim),
        "vocabulary": vocabulary_size,
        "codebook": codebook_size,
    }
    layout_map = keras.distribution.LayoutMap(mesh)
    for pattern, axes, dim in _rules(model_axis):
        if dims[dim] is not None and int(dims[dim]) % size == 0:
            layout_map[pattern] = axes
    return layout_map


def make_distribution(kind="none", model_parallel_size=1, hidden_dim=None, intermediate_dim=None,
                      vocabulary_size=None, codebook_size=None, devices=None,
                      auto_shard_dataset=False):
    """``keras.distribution.DataParallel`` / ``ModelParallel`` for VL-BEiT, or None.

    Args:
        kind: ``"none"`` (returns None), ``"data_parallel"`` (variables
            replicated, batch split over every device) or ``"model_parallel"``
            (mesh (devices / model_parallel_size, model_parallel_size), batch
            split on ``batch``, kernels per :func:`vlbeit_layout_map`).
        model_parallel_size: devices per replica (model_parallel only).
        hidden_dim, intermediate_dim, vocabulary_size, codebook_size: sizes
            for :func:`vlbeit_layout_map` (model_parallel only).
        devices: device names; default all devices of the job.
        auto_shard_dataset: Keras' own per-process re-batching of a global
            tf.data dataset. False (default) because the recipes shard the
            input pipeline per host themselves (:func:`data_shard`), so no
            host decodes examples it then drops.

    Raises:
        ValueError: unknown kind, missing sizes, bad ``model_parallel_size``,
            or a backend other than JAX.
    """
    if kind not in KINDS:
        raise ValueError(f"Unknown distribution kind {kind!r}; use one of {KINDS}.")
    if kind == "none":
        return None
    _require_jax(f"distribution.kind={kind!r}")
    if kind == "data_parallel":
        mesh = keras.distribution.DeviceMesh(
            shape=(len(list(devices or keras.distribution.list_devices())),),
            axis_names=("batch",),
            devices=list(devices or keras.distribution.list_devices()),
        )
        return keras.distribution.DataParallel(device_mesh=mesh, auto_shard_dataset=auto_shard_dataset)
    if hidden_dim is None or intermediate_dim is None:
        raise ValueError("model_parallel needs `hidden_dim` and `intermediate_dim`.")
    mesh = device_mesh(model_parallel_size, devices)
    layout_map = vlbeit_layout_map(mesh, hidden_dim, intermediate_dim, vocabulary_size, codebook_size)
    return keras.distribution.ModelParallel(
        layout_map=layout_map, batch_dim_name="batch", auto_shard_dataset=auto_shard_dataset
    )


def data_shard(distribution=None):
    """(num_shards, shard_index): this process's slice of every global batch.

    Follows Keras' own rule (``Distribution.distribute_tf_dataset``): when
    every process holds whole replicas, the batch is split over processes;
    when a replica spans several processes, they read the same slice
    (``distribution.data_shard_id``); with a single replica, or no
    distribution, every process reads the whole batch.
    """
    distribution = distribution or keras.distribution.distribution()
    if distribution is None or distribution.num_processes <= 1:
        return 1, 0
    replicas = distribution.num_model_replicas
    if replicas >= distribution.num_processes:
        return distribution.num_processes, distribution._process_id
    return replicas, distribution.data_shard_id


def per_shard_batch_size(global_batch_size, num_shards, what="batch size"):
    """``global_batch_size / num_shards`` or a clear error when it does not divide."""
    if global_batch_size % num_shards:
        raise ValueError(
            f"The global {what} {global_batch_size} is not divisible by the {num_shards} "
            "data shards (hosts); choose a multiple."
        )
    return global_batch_size // num_shards


def check_batch_divisible(global_batch_size, distribution=None, what="batch size"):
    """Raise a clear error when the batch cannot be split over the batch axis."""
    distribution = distribution or keras.distribution.distribution()
    if distribution is None or not global_batch_size:
        return
    axis = distribution.batch_dim_name
    mesh = distribution.device_mesh
    size = mesh.shape[list(mesh.axis_names).index(axis)]
    if global_batch_size % size:
        raise ValueError(
            f"The {what} {global_batch_size} must be a multiple of the {size} devices on the "
            f"mesh axis {axis!r} ({type(distribution).__name__})."
        )


def setup_distribution(config, hidden_dim=None, intermediate_dim=None, vocabulary_size=None,
                       codebook_size=None):
    """Initialise multi-host if asked, build and set the global distribution.

    Args:
        config: the recipe's ``distribution`` section: ``kind``
            (:data:`KINDS`), ``model_parallel_size`` (int), ``multi_host``
            (None = from the environment, True, False).
        hidden_dim, intermediate_dim, vocabulary_size, codebook_size: model
            sizes for the model-parallel layout.

    Returns:
        dict ``{"distribution", "num_shards", "shard_index",
        "process_index", "process_count", "num_devices"}``.
    """
    kind = config.get("kind", "none") or "none"
    process_index, process_count = 0, 1
    if kind != "none":
        process_index, process_count = initialize_multi_host(config.get("multi_host"))
    distribution = make_distribution(
        kind,
        model_parallel_size=int(config.get("model_parallel_size", 1) or 1),
        hidden_dim=hidden_dim,
        intermediate_dim=intermediate_dim,
        vocabulary_size=vocabulary_size,
        codebook_size=codebook_size,
    )
    keras.distribution.set_distribution(distribution)
    num_shards, shard_index = data_shard(distribution)
    return {
        "distribution": distribution,
        "num_shards": num_shards,
        "shard_index": shard_index,
        "process_index": process_index,
        "process_count": process_count,
        "num_devices": 1 if distribution is None else math.prod(distribution.device_mesh.shape),
    }
