"""Fine-tuning optimisers: per-variable learning-rate multipliers, layer-wise
lr decay, head lr multipliers and weight-decay exclusions.

Keras optimisers have one learning rate for all variables. Layer-wise decay
(BEiT ``get_num_layer_for_vit``: block l gets lr x decay^(L - l)) and VLMo's
head ``lr_mult`` (VQA: 20) need one per variable. :class:`LRMultiplierOptimizer`
wraps any Keras optimiser and rescales each variable's *displacement* of the
step: ``v_new = v_old + m_v * (inner_step(v_old) - v_old)``. For optimisers
whose step is proportional to the learning rate given their state (SGD with or
without momentum, Adam, AdamW with its decoupled decay, Lion, RMSprop,
Adagrad) this is exactly training that variable with ``lr x m_v``: the
momentum buffers grow proportionally, so the equality holds at every step.
Scaling *gradients* instead would be a no-op for Adam-type optimisers, which
normalise the gradient scale away.

The wrapper uses only the public optimiser API (``build``, ``apply``,
``stateless_apply``, ``variables``), so it runs under ``model.fit`` on
TensorFlow, JAX (stateless) and PyTorch; ``tests/tasks/test_optimization.py``
checks it against an explicit per-variable-lr reference on all three.
"""

import re

import keras
from keras import ops

# The project's weight-decay rule (MODEL_SPEC §6.5: rank <= 1 variables plus
# position tables), shared with pretraining.
from vlbeit_keras.optimizers import no_weight_decay_variables  # noqa: F401 (re-exported)

_BLOCK_PATTERN = re.compile(r"(?:^|/)blocks_(\d+)/")
_EMBEDDING_PREFIXES = ("patch_embed/", "text_embeddings/", "modality_type_embeddings/")


@keras.saving.register_keras_serializable(package="vlbeit_keras")
class LRMultiplierOptimizer(keras.optimizers.Optimizer):
    """Wrap an optimiser so each variable trains at ``lr x multiplier``.

    Args:
        inner_optimizer: a ``keras.optimizers.Optimizer`` (e.g. AdamW) that
            owns the learning rate, its schedule, weight decay, clipping and
            gradient accumulation. EMA (``use_ema``) is not supported (the
            average would see the unscaled step); it raises.
        multipliers: dict variable path (``variable.path``) -> float
            multiplier; variables not listed keep 1.0.
        no_weight_decay: optional list of variable paths excluded from the
            inner optimiser's weight decay. Applied at ``build`` (so, unlike
            ``exclude_from_weight_decay(var_list=...)``, it survives
            ``get_config`` and ``.keras`` saving).
        name: optimiser name.

    The wrapper's ``learning_rate`` and ``iterations`` are the inner
    optimiser's. Memory: one transient copy of each variable whose
    multiplier differs from 1 during the update.

    Raises:
        ValueError: at ``build``, a multiplier names a path not among the
            trained variables, or two trained variables share a path.

    Example:
    ```python
    inner = keras.optimizers.AdamW(1e-3, weight_decay=0.05)
    mults = layer_decay_multipliers(model, layer_decay=0.65)
    model.compile(optimizer=LRMultiplierOptimizer(inner, mults), loss=...)
    ```
    """

    def __init__(self, inner_optimizer, multipliers=None, no_weight_decay=None, name=None, **kwargs):
        if kwargs:
            raise ValueError(
                "LRMultiplierOptimizer takes no optimiser arguments "
                f"({', '.join(kwargs)}); set them on the inner optimiser."
            )
        super().__init__(learning_rate=0.0, name=name)
        if not isinstance(inner_optimizer, keras.optimizers.Optimizer):
            raise TypeError(
                "`inner_optimizer` must be a keras.optimizers.Optimizer; got "
                f"{type(inner_optimizer).__name__}."
            )
        if inner_optimizer.use_ema:
            raise ValueError("LRMultiplierOptimizer does not support an inner optimiser with use_ema=True.")
        self.inner_optimizer = inner_optimizer
        self.multipliers = {str(k): float(v) for k, v in dict(multipliers or {}).items()}
        self.no_weight_decay = sorted(str(p) for p in (no_weight_decay or ()))
        self._variable_multipliers = None

    # --- delegation -----------------------------------------------------
    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.inner_optimizer.learning_rate = learning_rate

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    @property
    def variables(self):
        return self._variables + self.inner_optimizer.variables

    def scale_loss(self, loss):
        return self.inner_optimizer.scale_loss(loss)

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)

    def exclude_from_weight_decay(self, var_list=None, var_names=None):
        self.inner_optimizer.exclude_from_weight_decay(var_list=var_list, var_names=var_names)

    # --- build / apply --------------------------------------------------
    def build(self, var_list):
        paths = {}
        for v in var_list:
            if v.path in paths:
                raise ValueError(
                    f"Two trained variables share the path {v.path!r}; "
                    "per-variable learning rates need unique paths (rename a layer)."
                )
            paths[v.path] = v
        for what, names in (("lr multipliers", self.multipliers),
                            ("no_weight_decay entries", self.no_weight_decay)):
            unknown = sorted(set(names) - set(paths))
            if unknown:
                raise ValueError(
                    f"{len(unknown)} {what} name variables that are not trained, "
                    f"e.g. {unknown[:5]}. Known paths look like {sorted(paths)[:3]}."
                )
        self._variable_multipliers = [self.multipliers.get(v.path, 1.0) for v in var_list]
        if self.no_weight_decay:
            self.inner_optimizer.exclude_from_weight_decay(
                var_list=[paths[p] for p in self.no_weight_decay]
            )
        self.inner_optimizer.build(var_list)
        super().build(var_list)

    def _multipliers_for(self, trainable_variables):
        if trainable_variables is None:
            return self._variable_multipliers
        return [self.multipliers.get(v.path, 1.0) for v in trainable_variables]

    def apply(self, grads, trainable_variables=None):
        if not self.built:
            with keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
            self.built = True
        variables = (
            self._trainable_variables if trainable_variables is None else list(trainable_variables)
        )
        scaled = [
            (v, m)
            for v, m, g in zip(variables, self._multipliers_for(variables), grads)
            if m != 1.0 and g is not None
        ]
        before = [ops.copy(v.value) for v, _ in scaled]
        self.inner_optimizer.apply(grads, trainable_variables)
        for (v, m), old in zip(scaled, before):
            v.assign(old + (v.value - old) * ops.cast(m, old.dtype))

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        n_own = len(self._variables)
        own, inner = list(optimizer_variables[:n_own]), list(optimizer_variables[n_own:])
        new_trainable, new_inner = self.inner_optimizer.stateless_apply(
            inner, grads, trainable_variables
        )
        out = []
        for old, new, m in zip(trainable_variables, new_trainable, self._variable_multipliers):
            out.append(new if m == 1.0 else old + (new - old) * ops.cast(m, old.dtype))
        return out, own + list(new_inner)

    # --- serialisation --------------------------------------------------
    def get_config(self):
        return {
            "name": self.name,
            "inner_optimizer": keras.saving.serialize_keras_object(self.inner_optimizer),
            "multipliers": dict(self.multipliers),
            "no_weight_decay": list(self.no_weight_decay),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["inner_optimizer"] = keras.saving.deserialize_keras_object(
            config["inner_optimizer"], custom_objects=custom_objects
        )
        return cls(**config)


def backbone_layer_id(path, num_layers):
    """BEiT layer id of a backbone variable path, for layer-wise decay.

    ``patch_embed``, ``text_embeddings``, ``modality_type_embeddings`` -> 0;
    ``transformer/blocks_i/...`` -> i + 1; everything else (shared relative
    table, final norm, pooler) -> ``num_layers + 1`` (BEiT
    ``get_num_layer_for_vit``: the shared ``rel_pos_bias`` and the head get
    the top id).

    Args:
        path: str, ``variable.path``.
        num_layers: int, backbone blocks L.

    Returns:
        int in [0, L + 1].
    """
    if path.startswith(_EMBEDDING_PREFIXES):
        return 0
    match = _BLOCK_PATTERN.search(path)
    if match:
        return int(match.group(1)) + 1
    return num_layers + 1


def lr_multipliers(model, backbone=None, layer_decay=None, head_multiplier=1.0):
    """Per-variable lr multipliers for a task model.

    Backbone variables get ``layer_decay ** (L + 1 - layer_id)`` (1.0 when
    ``layer_decay`` is None); every other trainable variable (the task heads)
    gets ``head_multiplier`` (VLMo ``lr_mult``: 20 for VQA).

    Args:
        model: the task model (its ``trainable_variables`` are assigned).
        backbone: the backbone inside it (default ``model.backbone``).
        layer_decay: float in (0, 1], e.g. 0.65 (BEiT-base ImageNet), or None.
        head_multiplier: float multiplier of non-backbone variables.

    Returns:
        dict path -> multiplier, for :class:`LRMultiplierOptimizer` (only
        entries different from 1.0).

    Raises:
        ValueError: ``layer_decay`` outside (0, 1].
    """
    backbone = backbone if backbone is not None else model.backbone
    if layer_decay is not None and not 0.0 < float(layer_decay) <= 1.0:
        raise ValueError(f"`layer_decay` must be in (0, 1]; got {layer_decay!r}.")
    backbone_ids = {id(v) for v in backbone.weights}
    num_layers = backbone.num_layers
    out = {}
    for v in model.trainable_variables:
        if id(v) in backbone_ids:
            if layer_decay is None:
                continue
            m = float(layer_decay) ** (num_layers + 1 - backbone_layer_id(v.path, num_layers))
        else:
            m = float(head_multiplier)
        if m != 1.0:
            out[v.path] = m
    return out


def finetune_optimizer(
    model,
    learning_rate=3e-5,
    weight_decay=0.01,
    head_multiplier=1.0,
    layer_decay=None,
    beta_1=0.9,
    beta_2=0.98,
    epsilon=1e-8,
    global_clipnorm=None,
):
    """AdamW as VLMo fine-tunes (``vlmo_utils.py`` ``set_schedule``), with
    decay exclusions and optional head / layer-wise lr multipliers.

    Args:
        model: task model with a ``backbone`` attribute.
        learning_rate: float or a ``keras.optimizers.schedules`` schedule
            (recipes pass warmup + linear decay).
        weight_decay: float (VLMo fine-tuning: 0.01).
        head_multiplier: lr multiplier of the task heads.
        layer_decay: optional layer-wise decay factor for the backbone.
        beta_1, beta_2, epsilon: AdamW (VLMo: 0.9, 0.98, 1e-8).
        global_clipnorm: optional gradient clipping.

    Returns:
        :class:`LRMultiplierOptimizer` around ``keras.optimizers.AdamW``
        (the wrapper also carries the decay exclusions, so they survive
        saving).
    """
    inner = keras.optimizers.AdamW(
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        beta_1=beta_1,
        beta_2=beta_2,
        epsilon=epsilon,
        global_clipnorm=global_clipnorm,
    )
    multipliers = lr_multipliers(model, layer_decay=layer_decay, head_multiplier=head_multiplier)
    no_decay = [v.path for v in no_weight_decay_variables(model)]
    return LRMultiplierOptimizer(inner, multipliers, no_weight_decay=no_decay)
