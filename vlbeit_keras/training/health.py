"""Training health: a ``keras.callbacks.Callback`` that watches for the ways a
run fails to learn, and the measurements behind it.

A loss can go down while the model learns nothing: a contrastive loss that
sits at ln(batch) is the loss of identical features, a binary loss at the
entropy of the label prior is a model that answers the majority class, a
pooled feature whose spread over the batch is ~0 carries no information about
the input (docs/training_health.md shows all three on this project's demo
runs). :class:`TrainingHealthMonitor` checks, while ``fit`` runs:

- **losses at chance**: a tracked loss not getting ``chance_tolerance`` below
  its chance value (ln B for contrastive, the entropy of the label prior for
  matching, ln C for C-way classification, ln V for vocabulary heads) for
  ``patience_steps`` steps;
- **feature collapse**: the spread (:func:`feature_spread`) of the model's
  pooled features on a fixed probe batch below ``collapse_threshold``;
- **gradient health**: per layer group (:func:`layer_group`) gradient norms
  on the probe batch that are non-finite, explode (``explode_factor`` times
  their running median) or vanish (below ``vanish_threshold``);
- **non-finite loss**: stops the run by raising :class:`NonFiniteLossError`
  from the batch callback, before any epoch-end checkpoint can save the
  non-finite state (``BackupAndRestore`` keeps the last finite one).

Every measured number goes to TensorBoard (``log_dir``, scalars under
``health/``) and to :attr:`TrainingHealthMonitor.history`; every finding to
:attr:`TrainingHealthMonitor.events` and a :class:`TrainingHealthWarning`.

Models tell the monitor what to watch through two optional methods (the
task models and the pretrainer of this package define both):

- ``health_features(x) -> {name: float (B, d)}``: the pooled features the
  heads read;
- ``chance_losses(batch_size) -> {metric name: chance value in nats}``.

Any Keras model works with explicit ``feature_fn`` / ``chance_losses``.
"""

import math
import warnings

import keras
import numpy as np

BACKBONE_SHARED_GROUP = "backbone_shared"


class TrainingHealthWarning(UserWarning):
    """A training-health finding (loss at chance, collapse, gradients)."""


class NonFiniteLossError(RuntimeError):
    """Raised by :class:`TrainingHealthMonitor` when a logged loss is NaN or
    infinite; the message names the step, the values and what to try."""


# ----------------------------------------------------------------- measures
def feature_spread(features):
    """Scale-free spread of a batch of feature vectors.

    ``mean_d std_b(f) / sqrt(mean_{b,d} f^2)``: 0 when every example has the
    same vector (collapse), about 1 for independent zero-mean features.
    Unchanged by a global rescaling of the features.

    Args:
        features: float array-like (B, d), B >= 2.

    Returns:
        float in [0, 1].

    Raises:
        ValueError: not 2-D or fewer than 2 examples.
    """
    f = np.asarray(keras.ops.convert_to_numpy(features), dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"feature_spread needs (batch >= 2, dim) features; got shape {f.shape}.")
    rms = math.sqrt(float(np.mean(f * f)))
    if rms == 0.0:
        return 0.0
    return float(np.mean(np.std(f, axis=0)) / rms)


def mean_cosine(features):
    """Mean cosine similarity between different examples of a batch
    (1.0 = all vectors point the same way). float (B, d) -> float."""
    f = np.asarray(keras.ops.convert_to_numpy(features), dtype=np.float64)
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    n = f.shape[0]
    c = f @ f.T
    return float((c.sum() - np.trace(c)) / max(n * n - n, 1))


def layer_group(path, backbone_paths=None):
    """Layer group of a variable path, for per-group gradient norms.

    ``...blocks_<i>/...`` -> ``"block_<i>"``; the embeddings
    (``patch_embed``, ``text_embeddings``, ``modality_type_embeddings``) ->
    ``"embeddings"``; other backbone variables (relative-position table,
    final norm, pooler) -> ``"backbone_shared"``; everything else -> the
    first component of the path (the task heads, e.g. ``"classifier"``).

    Args:
        path: ``variable.path``.
        backbone_paths: optional set of the backbone's variable paths.

    Returns:
        str.
    """
    parts = path.split("/")
    for part in parts:
        if part.startswith("blocks_") and part[len("blocks_"):].isdigit():
            return "block_" + part[len("blocks_"):]
    for part in parts:
        if part in ("patch_embed", "text_embeddings", "modality_type_embeddings"):
            return "embeddings"
    if backbone_paths is not None and path in backbone_paths:
        return BACKBONE_SHARED_GROUP
    return parts[0] if len(parts) > 1 else "other"


def _backbone_paths(model):
    backbone = getattr(model, "backbone", None)
    return {v.path for v in backbone.weights} if backbone is not None else set()


def gradient_norms(model, x, y=None, sample_weight=None):
    """Global gradient norm of each layer group on one batch, all backends.

    The loss is the model's own (``compute_loss``, with ``training=False``,
    so no drop path); metric trackers, seed generators and other state are
    left exactly as they were (restored after TensorFlow / PyTorch passes;
    JAX runs statelessly).

    Args:
        model: a built, compiled ``keras.Model``.
        x, y, sample_weight: one batch as ``fit`` receives it.

    Returns:
        dict group name (:func:`layer_group`) -> float L2 norm.
    """
    backend = keras.backend.backend()
    variables = model.trainable_variables
    if backend == "jax":
        grads = _jax_gradients(model, x, y, sample_weight)
    else:
        saved = [(v, keras.ops.convert_to_numpy(v)) for v in
                 list(model.non_trainable_variables) + list(model.metrics_variables)]
        try:
            if backend == "tensorflow":
                grads = _tf_gradients(model, x, y, sample_weight)
            elif backend == "torch":
                grads = _torch_gradients(model, x, y, sample_weight)
            else:
                raise NotImplementedError(f"gradient_norms: backend {backend!r} is not supported.")
        finally:
            for v, value in saved:
                v.assign(value)
    paths = _backbone_paths(model)
    own = f"{model.name}/"
    sums = {}
    for v, g in zip(variables, grads):
        if g is None:
            continue
        g = np.asarray(g, dtype=np.float64)
        # A variable of the model itself (e.g. the ITC logit_scale): its name.
        group = v.path[len(own):] if v.path.startswith(own) else layer_group(v.path, paths)
        sums[group] = sums.get(group, 0.0) + float(np.sum(g * g))
    return {k: math.sqrt(s) if math.isfinite(s) else float("nan") for k, s in sums.items()}


def _jax_gradients(model, x, y, sample_weight):
    import jax

    fn = getattr(model, "_vlbeit_health_grad_fn", None)
    if fn is None:
        def loss(trainable, non_trainable, metrics, x, y, sample_weight):
            value, _ = model.compute_loss_and_updates(
                trainable, non_trainable, metrics, x, y, sample_weight, training=False
            )
            return value

        fn = jax.jit(jax.grad(loss))
        model._vlbeit_health_grad_fn = fn
    grads = fn(
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in model.metrics_variables],
        x, y, sample_weight,
    )
    return [np.asarray(g) for g in grads]


def _forward_loss(model, x, y, sample_weight):
    y_pred = model(x, training=False)
    return model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=False)


def _tf_gradients(model, x, y, sample_weight):
    import tensorflow as tf

    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        loss = _forward_loss(model, x, y, sample_weight)
    grads = tape.gradient(loss, [v.value for v in variables])
    # Embedding gradients arrive as IndexedSlices: densify.
    return [None if g is None else tf.convert_to_tensor(g).numpy() for g in grads]


def _torch_gradients(model, x, y, sample_weight):
    import torch

    variables = model.trainable_variables
    previous = [v.value.grad for v in variables]
    for v in variables:
        v.value.grad = None
    try:
        with torch.enable_grad():
            loss = _forward_loss(model, x, y, sample_weight)
            loss.backward()
        return [None if v.value.grad is None else v.value.grad.detach().cpu().numpy()
                for v in variables]
    finally:
        for v, g in zip(variables, previous):
            v.value.grad = g


def _to_numpy_tree(batch):
    return keras.tree.map_structure(
        lambda t: None if t is None else np.asarray(keras.ops.convert_to_numpy(t)), batch
    )


# ----------------------------------------------------------------- callback
class TrainingHealthMonitor(keras.callbacks.Callback):
    """Warns when training stops learning; stops it on a non-finite loss.

    Args:
        probe_batch: one batch as ``fit`` receives it (``x`` or
            ``(x, y[, sample_weight])``), used for the feature and gradient
            probes; None disables both probes (losses are still watched).
        chance_losses: dict metric name -> chance value (nats), added to (and
            overriding) ``model.chance_losses(batch_size)`` when the model
            defines it.
        batch_size: batch size for ``model.chance_losses`` (default: taken
            from ``probe_batch``).
        patience_steps: steps a loss may stay at chance before the warning
            (default 200).
        chance_tolerance: a loss counts as "at chance" while it is not below
            ``(1 - chance_tolerance) x`` its chance value (default 0.02).
        probe_every: steps between probes (default 100; also at step 0).
        feature_fn: callable ``x -> {name: (B, d)}``; default
            ``model.health_features`` when defined.
        collapse_threshold: a feature whose :func:`feature_spread` is below
            this is reported collapsed (default 0.02; healthy pooled features
            of this project's models are above 0.1, collapsed ones measured
            0.0001-0.02, docs/training_health.md).
        gradients: probe per-group gradient norms (default True).
        explode_factor: a group's gradient norm above this multiple of its
            running median is reported (default 100).
        vanish_threshold: a group's gradient norm below this is reported
            (default 1e-8).
        log_dir: TensorBoard directory for the ``health/`` scalars (None: no
            TensorBoard output).
        stop_on_nonfinite: raise :class:`NonFiniteLossError` on a NaN/inf
            loss (default True). Like ``keras.callbacks.TerminateOnNaN(
            raise_error=True)``, but every logged value is checked, the
            finding is recorded and the message says what to try.
        min_batches: Keras logs running means that restart every epoch; the
            chance check reads them only from this batch of an epoch on (or
            at its last batch when the epoch is shorter). Default 20.
        verbose: 1 issues a :class:`TrainingHealthWarning` per finding.

    Attributes:
        events: list of dicts ``{"step", "kind", "name", "value", "message"}``;
            kinds ``loss_at_chance``, ``loss_left_chance``,
            ``feature_collapse``, ``feature_recovered``,
            ``gradient_nonfinite``, ``gradient_explode``,
            ``gradient_vanish``, ``nonfinite_loss``.
        history: list of dicts, one per probe: ``step``, ``spread/<name>``,
            ``cosine/<name>``, ``grad_norm/<group>``.

    Raises (from ``fit``):
        NonFiniteLossError: a logged loss is NaN or infinite.

    Example:
    ```python
    monitor = TrainingHealthMonitor(probe_batch=next(iter(train_ds)),
                                    log_dir="runs/x/tensorboard/health")
    model.fit(train_ds, epochs=3, steps_per_epoch=100, callbacks=[monitor])
    monitor.events  # what it found
    ```
    """

    def __init__(
        self,
        probe_batch=None,
        chance_losses=None,
        batch_size=None,
        patience_steps=200,
        chance_tolerance=0.02,
        probe_every=100,
        feature_fn=None,
        collapse_threshold=0.02,
        gradients=True,
        explode_factor=100.0,
        vanish_threshold=1e-8,
        log_dir=None,
        stop_on_nonfinite=True,
        min_batches=20,
        verbose=1,
    ):
        super().__init__()
        if int(patience_steps) < 1 or int(probe_every) < 1:
            raise ValueError("`patience_steps` and `probe_every` must be >= 1.")
        if not 0.0 <= float(chance_tolerance) < 1.0:
            raise ValueError(f"`chance_tolerance` must be in [0, 1); got {chance_tolerance}.")
        self.probe_batch = None if probe_batch is None else _to_numpy_tree(probe_batch)
        self.extra_chance_losses = dict(chance_losses or {})
        self.batch_size = batch_size
        self.patience_steps = int(patience_steps)
        self.chance_tolerance = float(chance_tolerance)
        self.probe_every = int(probe_every)
        self.feature_fn = feature_fn
        self.collapse_threshold = float(collapse_threshold)
        self.gradients = bool(gradients)
        self.explode_factor = float(explode_factor)
        self.vanish_threshold = float(vanish_threshold)
        self.log_dir = log_dir
        self.stop_on_nonfinite = bool(stop_on_nonfinite)
        self.verbose = int(verbose)
        self.min_batches = int(min_batches)
        self.events = []
        self.history = []
        self.chance_losses = {}
        self._at_chance_since = {}
        self._warned_chance = set()
        self._collapsed = set()
        self._grad_history = {}
        self._writer = None
        self._step = 0

    # --- set-up ---------------------------------------------------------
    def _probe_x(self):
        if self.probe_batch is None:
            return None
        return keras.utils.unpack_x_y_sample_weight(self.probe_batch)[0]

    def _resolve_batch_size(self):
        if self.batch_size is not None:
            return int(self.batch_size)
        x = self._probe_x()
        if x is None:
            return None
        return int(keras.tree.flatten(x)[0].shape[0])

    def on_train_begin(self, logs=None):
        self._step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) \
            if getattr(self.model, "optimizer", None) is not None else 0
        chance = {}
        hook = getattr(self.model, "chance_losses", None)
        batch_size = self._resolve_batch_size()
        if callable(hook):
            chance.update(hook(batch_size) or {})
        chance.update(self.extra_chance_losses)
        self.chance_losses = {k: float(v) for k, v in chance.items() if v is not None and v > 0}
        if self.log_dir and self._writer is None:
            import tensorflow as tf

            self._writer = tf.summary.create_file_writer(str(self.log_dir))
        self._probe()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()

    # --- per step -------------------------------------------------------
    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        logs = logs or {}
        values = {}
        for key, value in logs.items():
            try:
                values[key] = float(value)
            except (TypeError, ValueError):
                continue
        bad = {k: v for k, v in values.items() if not math.isfinite(v)}
        if bad and self.stop_on_nonfinite:
            message = (
                f"non-finite loss at step {self._step}: "
                + ", ".join(f"{k}={v}" for k, v in sorted(bad.items()))
                + ". Training stopped before this state could be checkpointed; the last "
                "epoch checkpoint is intact. Try a lower learning rate, gradient clipping "
                "(optimizer.global_clipnorm), a longer warm-up, or float32 instead of "
                "mixed precision."
            )
            self._event("nonfinite_loss", "loss", next(iter(bad.values())), message, warn=False)
            self.model.stop_training = True
            raise NonFiniteLossError(message)
        # Keras logs running means that restart every epoch: judge them only
        # once they average over `min_batches` steps (or the whole epoch).
        steps = (self.params or {}).get("steps") or self.min_batches
        if batch + 1 >= min(self.min_batches, steps):
            for name, chance in self.chance_losses.items():
                if name in values:
                    self._check_chance(name, values[name], chance)
        if self._step % self.probe_every == 0:
            self._probe()

    def _check_chance(self, name, value, chance):
        # "At chance": not below the chance value by more than the tolerance
        # (a loss above it, worse than the prior, counts too).
        at_chance = value >= (1.0 - self.chance_tolerance) * chance
        if at_chance:
            since = self._at_chance_since.setdefault(name, self._step)
            if self._step - since + 1 >= self.patience_steps and name not in self._warned_chance:
                self._warned_chance.add(name)
                self._event(
                    "loss_at_chance", name, value,
                    f"step {self._step}: {name} = {value:.4f} has not gone more than "
                    f"{100 * self.chance_tolerance:g}% below its chance value {chance:.4f} since "
                    f"step {since} ({self._step - since + 1} steps): the model predicts no better "
                    "than the prior. Check feature collapse (health/spread in TensorBoard), "
                    "the pooling, the learning rate and the labels.",
                )
        else:
            self._at_chance_since.pop(name, None)
            if name in self._warned_chance:
                self._warned_chance.discard(name)
                self._event("loss_left_chance", name, value,
                            f"step {self._step}: {name} = {value:.4f} left its chance value "
                            f"{chance:.4f}.", warn=False)

    # --- probes ---------------------------------------------------------
    def _probe(self):
        x = self._probe_x()
        if x is None:
            return
        row = {"step": self._step}
        features = self._features(x)
        for name, f in features.items():
            spread, cosine = feature_spread(f), mean_cosine(f)
            row[f"spread/{name}"] = spread
            row[f"cosine/{name}"] = cosine
            if spread < self.collapse_threshold:
                if name not in self._collapsed:
                    self._collapsed.add(name)
                    self._event(
                        "feature_collapse", name, spread,
                        f"step {self._step}: feature '{name}' has collapsed: spread over the "
                        f"probe batch {spread:.4g} < {self.collapse_threshold:g} (mean cosine "
                        f"between examples {cosine:.5f}); the heads reading it see nearly the "
                        "same vector for every input.",
                    )
            elif name in self._collapsed:
                self._collapsed.discard(name)
                self._event("feature_recovered", name, spread,
                            f"step {self._step}: feature '{name}' spread {spread:.4g} is "
                            "above the collapse threshold again.", warn=False)
        if self.gradients and getattr(self.model, "compiled", True):
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(self.probe_batch)
            norms = gradient_norms(self.model, x, y, sample_weight)
            for group, norm in sorted(norms.items()):
                row[f"grad_norm/{group}"] = norm
                self._check_gradient(group, norm)
        self.history.append(row)
        if self._writer is not None:
            import tensorflow as tf

            with self._writer.as_default(step=self._step):
                for key, value in row.items():
                    if key != "step" and math.isfinite(value):
                        tf.summary.scalar(f"health/{key}", value)
            self._writer.flush()

    def _features(self, x):
        fn = self.feature_fn or getattr(self.model, "health_features", None)
        if fn is None:
            return {}
        out = fn(x)
        return {k: np.asarray(keras.ops.convert_to_numpy(v)) for k, v in out.items()}

    def _check_gradient(self, group, norm):
        past = self._grad_history.setdefault(group, [])
        if not math.isfinite(norm):
            self._event("gradient_nonfinite", group, norm,
                        f"step {self._step}: gradient of layer group '{group}' is not finite.")
        elif norm < self.vanish_threshold:
            self._event("gradient_vanish", group, norm,
                        f"step {self._step}: gradient norm of layer group '{group}' is "
                        f"{norm:.3g} (< {self.vanish_threshold:g}): it no longer learns.")
        elif len(past) >= 2 and norm > self.explode_factor * float(np.median(past)):
            self._event("gradient_explode", group, norm,
                        f"step {self._step}: gradient norm of layer group '{group}' is "
                        f"{norm:.3g}, {norm / float(np.median(past)):.0f}x its running median "
                        f"{float(np.median(past)):.3g}.")
        if math.isfinite(norm):
            past.append(norm)

    # --- reporting ------------------------------------------------------
    def _event(self, kind, name, value, message, warn=True):
        self.events.append({"step": self._step, "kind": kind, "name": name,
                            "value": float(value), "message": message})
        if warn and self.verbose:
            warnings.warn(message, TrainingHealthWarning, stacklevel=3)

    def summary(self):
        """dict: ``chance_losses``, ``events``, ``last_probe`` (JSON-ready)."""
        return {
            "chance_losses": dict(self.chance_losses),
            "events": list(self.events),
            "last_probe": dict(self.history[-1]) if self.history else None,
        }




def monitor_from_config(config, model, dataset, log_dir=None, chance_losses=None):
    """The recipes' monitor: a :class:`TrainingHealthMonitor` configured by a
    recipe's ``health`` section, probing the first batch of ``dataset``.

    Args:
        config: mapping with ``enabled`` and any :class:`TrainingHealthMonitor`
            argument (the recipes' ``health`` section: ``probe_every``,
            ``patience_steps``, ``chance_tolerance``, ``collapse_threshold``,
            ``gradients``); None or ``enabled=False`` -> None.
        model: the model ``fit`` trains.
        dataset: the training ``tf.data.Dataset`` (a fresh iterator takes
            one batch; the training iterator is not touched).
        log_dir: TensorBoard directory for the ``health/`` scalars.
        chance_losses: extra chance values, overriding the model's.

    Returns:
        a monitor, or None when disabled.
    """
    if not config or not config.get("enabled", True):
        return None
    settings = {k: v for k, v in dict(config).items() if k != "enabled"}
    return TrainingHealthMonitor(probe_batch=next(iter(dataset)), chance_losses=chance_losses,
                                 log_dir=log_dir, **settings)


def format_health(summary):
    """Lines for the end of a recipe run from :meth:`TrainingHealthMonitor.summary`
    (None: the monitor was off)."""
    if summary is None:
        return "training health: monitor off"
    events = summary.get("events") or []
    if not events:
        probe = summary.get("last_probe") or {}
        spreads = ", ".join(f"{k.split('/', 1)[1]} {v:.3f}" for k, v in probe.items()
                            if k.startswith("spread/"))
        at = f" at step {probe['step']}" if "step" in probe else ""
        return "training health: no findings" + (
            f" (feature spread{at}: {spreads})" if spreads else "")
    return "\n".join(["training health:"] + [f"  {e['message']}" for e in events])


__all__ = [
    "NonFiniteLossError",
    "TrainingHealthMonitor",
    "TrainingHealthWarning",
    "feature_spread",
    "format_health",
    "gradient_norms",
    "layer_group",
    "mean_cosine",
    "monitor_from_config",
]
