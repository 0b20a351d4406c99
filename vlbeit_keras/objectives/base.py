"""The pretraining-objective contract.

An objective is a small configuration object (not a Keras layer): the weights
it needs (heads, [MASK] embeddings) are *shared layers* owned by the
:class:`~vlbeit_keras.models.vlbeit_pretrainer.VLBEiTPretrainer`, created
through ``pretrainer.shared_layer(name, factory)`` so that two objectives can
share one head (MODEL_SPEC §6.3: MLM and MVLM-text share the MLM head, MIM and
MVLM-image the MIM head). Objectives are registered through the
``register_objectives`` plugin hook and rebuilt by name when a pretrainer is
deserialized.
"""


class PretrainingObjective:
    """Base class of pretraining objectives.

    Subclasses set :attr:`stream` and implement :meth:`build`, :meth:`call`
    and :meth:`compute_loss`.

    Attributes:
        stream: the key of the batch stream this objective reads:
            ``"text"``, ``"image"`` or ``"image_text"`` (see ``docs/pretraining.md``
            for each stream's fields).
        metric_names: names of the values :meth:`compute_loss` returns; the
            pretrainer reports each as ``<objective>_<name>``.

    Args:
        weight: float, multiplier of this objective's loss in the total.
    """

    stream = None
    metric_names = ("loss", "accuracy")

    def __init__(self, weight=1.0):
        self.weight = float(weight)

    def build(self, pretrainer):
        """Create (or look up) the shared layers this objective needs.

        Called once from the pretrainer's constructor. Use
        ``pretrainer.shared_layer(name, factory)``; build the layers here so
        that every weight exists before the first batch.
        """

    def call(self, pretrainer, inputs, training=False):
        """Forward pass on one stream.

        Args:
            pretrainer: the owning pretrainer (``pretrainer.backbone``,
                ``pretrainer.shared_layer(...)``, ``pretrainer.visual_tokenizer``).
            inputs: dict of tensors of this objective's stream.
            training: bool.

        Returns:
            dict of tensors (this objective's ``y_pred``), e.g. logits gathered
            at masked positions and any targets computed in the model.
        """
        raise NotImplementedError

    def compute_loss(self, pretrainer, inputs, predictions):
        """Loss and metrics from ``inputs`` (targets) and ``predictions``.

        Returns:
            dict with float32 scalars for every name in :attr:`metric_names`;
            ``"loss"`` is the (unweighted) loss of this objective. A value
            ``"<name>_count"`` (float32 scalar), if present, weights the
            running mean of ``<name>`` (e.g. masked tokens for an accuracy).
        """
        raise NotImplementedError

    def chance_losses(self, pretrainer):
        """Chance value (nats) of each loss in :attr:`metric_names`.

        The loss of a model that has learned nothing about the input, for
        :class:`vlbeit_keras.training.health.TrainingHealthMonitor`: ln V
        for a V-way vocabulary head. Default: none.

        Returns:
            dict metric name (without the objective prefix) -> float.
        """
        return {}

    def get_config(self):
        """JSON-serialisable constructor arguments."""
        return {"weight": self.weight}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
