"""K-means patch-codebook tokenizer, trained here on the user's images."""

import time

import keras
import numpy as np
from keras import ops

from vlbeit_keras.data.visual_tokenizers.base import VisualTokenizer
from vlbeit_keras.data.visual_tokenizers.base import codebook_usage
from vlbeit_keras.data.visual_tokenizers.base import pooled_patch_features

FEATURES = ("pixels", "normalized_pixels")
METRICS = ("euclidean", "cosine")
INITS = ("kmeans++", "random")


@keras.saving.register_keras_serializable(package="vlbeit_keras")
class KMeansTokenizer(VisualTokenizer):
    """Visual tokenizer whose codebook is a k-means clustering of patch features.

    The trainable tokenizer of MODEL_SPEC §7 for when no DALL-E / VQ-KD weights
    exist: a patch codebook in the manner of Coates & Ng (2011) k-means
    feature learning. Features per patch: the patch average-pooled to
    ``pool_size`` x ``pool_size`` x 3 (``"pixels"``: colour and coarse layout),
    or the same normalised per patch to zero mean and unit variance
    (``"normalized_pixels"``: layout only, MAE's normalised-pixel target).
    Tokens are the nearest centroid, by Euclidean distance or, with
    ``metric="cosine"``, by cosine similarity of L2-normalised features and
    centroids (VQ-KD's lookup, BEiT v2 ``norm_ema_quantizer.py``).

    Train with :meth:`fit_codebook` (NumPy Lloyd iterations with k-means++ or
    random-sample initialisation and dead-code restarts);
    ``recipes/train_visual_tokenizer.py`` does it from a data source. An
    untrained tokenizer has an all-zero codebook and maps everything to id 0.

    Args:
        patch_size: int, the backbone's patch size.
        codebook_size: int K (64-1024 for small data, 8192 for Base runs).
        pool_size: int s dividing ``patch_size`` (4: 48 features per patch).
        feature: ``"pixels"`` or ``"normalized_pixels"``.
        metric: ``"euclidean"`` or ``"cosine"``.
        dtype: dtype policy (float32 by default).

    Call: float (B, H, W, 3) in [-1, 1] -> int32 (B, N).
    """

    def __init__(self, patch_size=16, codebook_size=256, pool_size=4, feature="pixels",
                 metric="euclidean", **kwargs):
        super().__init__(patch_size=patch_size, codebook_size=codebook_size, **kwargs)
        if self.patch_size % int(pool_size):
            raise ValueError(
                f"`pool_size` ({pool_size}) must divide `patch_size` ({patch_size})."
            )
        if feature not in FEATURES:
            raise ValueError(f"`feature` must be one of {FEATURES}; received {feature!r}.")
        if metric not in METRICS:
            raise ValueError(f"`metric` must be one of {METRICS}; received {metric!r}.")
        self.pool_size = int(pool_size)
        self.feature = feature
        self.metric = metric
        self.feature_dim = self.pool_size * self.pool_size * 3
        self.codebook = self.add_weight(
            shape=(self.codebook_size, self.feature_dim), initializer="zeros",
            trainable=False, name="codebook",
        )
        self.built = True

    def features(self, images):
        x = pooled_patch_features(images, self.patch_size, self.pool_size)
        if self.feature == "normalized_pixels":
            mean = ops.mean(x, axis=-1, keepdims=True)
            var = ops.var(x, axis=-1, keepdims=True)
            x = (x - mean) / ops.sqrt(var + 1e-6)
        return x

    def tokenize_features(self, features):
        codebook = ops.cast(self.codebook, "float32")
        if self.metric == "cosine":
            features = features / ops.maximum(ops.norm(features, axis=-1, keepdims=True), 1e-6)
            codebook = codebook / ops.maximum(ops.norm(codebook, axis=-1, keepdims=True), 1e-6)
            scores = ops.matmul(features, ops.transpose(codebook))
        else:
            # argmin |f - c|^2 = argmax (2 f.c - |c|^2)
            scores = 2.0 * ops.matmul(features, ops.transpose(codebook)) - ops.sum(
                codebook * codebook, axis=-1
            )
        return ops.cast(ops.argmax(scores, axis=-1), "int32")

    def get_config(self):
        config = super().get_config()
        config.update({"pool_size": self.pool_size, "feature": self.feature,
                       "metric": self.metric})
        return config

    # ---- training ------------------------------------------------------
    def collect_features(self, images, max_patches=200_000, max_batches=None, seed=0):
        """Patch features of an image source, randomly subsampled to ``max_patches``.

        Args:
            images: float array (n, H, W, 3) in [-1, 1], or an iterable of such
                arrays or of dicts with an ``"images"`` entry (e.g. a
                :func:`~vlbeit_keras.data.pipeline.make_image_dataset`).
            max_patches: int, at most this many patches are kept (uniformly
                at random without replacement).
            max_batches: optional int, stop reading after this many batches.
            seed: int.

        Returns:
            float32 ndarray (num_patches, F).
        """
        rng = np.random.default_rng(seed)
        if isinstance(images, np.ndarray):
            images = [images[i:i + 64] for i in range(0, len(images), 64)]
        chunks = []
        for b, batch in enumerate(images):
            if max_batches is not None and b >= max_batches:
                break
            if isinstance(batch, dict):
                batch = batch["images"]
            elif isinstance(batch, (tuple, list)):
                batch = batch[0]["images"] if isinstance(batch[0], dict) else batch[0]
            feats = ops.convert_to_numpy(self.features(np.asarray(batch, np.float32)))
            chunks.append(feats.reshape(-1, self.feature_dim))
        if not chunks:
            raise ValueError("No images to collect features from.")
        data = np.concatenate(chunks).astype(np.float32)
        if len(data) > max_patches:
            data = data[rng.choice(len(data), size=max_patches, replace=False)]
        return data

    def fit_codebook(self, images, max_patches=200_000, max_batches=None, iterations=25,
                     init="kmeans++", restart_dead_codes=True, seed=0, verbose=False):
        """Train the codebook on images with k-means; returns statistics.

        Args:
            images: as :meth:`collect_features` (or an ndarray (n, F) of
                features already collected).
            max_patches, max_batches: sampling limits (see
                :meth:`collect_features`).
            iterations: int, Lloyd iterations.
            init: ``"kmeans++"`` (Arthur & Vassilvitskii 2007, on up to 50,000
                sampled patches), ``"random"`` (K distinct random patches), or
                an array (K, F) of initial centroids (e.g. the current
                codebook, to continue training).
            restart_dead_codes: bool: after each iteration but the last two,
                a code that received no patch is moved to a patch drawn with
                probability proportional to its squared distance to its
                centroid (so restarts split badly served regions).
            seed: int, seeds sampling, initialisation and restarts.
            verbose: print one line per iteration.

        Returns:
            dict: :func:`~vlbeit_keras.data.visual_tokenizers.codebook_usage`
            of the training patches under the final codebook, plus
            ``num_patches``, ``inertia`` (mean squared distance, or mean
            1 - cosine), ``history`` (per-iteration inertia and dead codes),
            ``restarts`` (total dead-code restarts) and ``seconds``.

        Raises:
            ValueError: fewer patches than ``codebook_size``, or an
                unknown ``init``.
        """
        start = time.time()
        if isinstance(images, np.ndarray) and images.ndim == 2:
            data = images.astype(np.float32)
        else:
            data = self.collect_features(images, max_patches, max_batches, seed)
        centroids, history, restarts, assign = kmeans(
            data, self.codebook_size, iterations=iterations, init=init,
            metric=self.metric, restart_dead_codes=restart_dead_codes, seed=seed,
            verbose=verbose,
        )
        self.codebook.assign(centroids)
        stats = codebook_usage(assign, self.codebook_size)
        stats.update({
            "num_patches": int(len(data)),
            "inertia": history[-1]["inertia"],
            "history": history,
            "restarts": restarts,
            "seconds": time.time() - start,
        })
        return stats


def _normalize(x):
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


def nearest_centroids(data, centroids, metric="euclidean", chunk=32768):
    """Index of the nearest centroid of each row and its distance (NumPy).

    Distances: squared Euclidean, or 1 - cosine for ``metric="cosine"``
    (``data`` and ``centroids`` are then normalised here).

    Returns:
        (int64 (n,), float32 (n,)).
    """
    if metric == "cosine":
        data, centroids = _normalize(data), _normalize(centroids)
    c_sq = (centroids * centroids).sum(axis=1)
    index = np.empty(len(data), np.int64)
    dist = np.empty(len(data), np.float32)
    for i in range(0, len(data), chunk):
        x = data[i:i + chunk]
        dots = x @ centroids.T
        if metric == "cosine":
            best = dots.argmax(axis=1)
            d = 1.0 - dots[np.arange(len(x)), best]
        else:
            scores = 2.0 * dots - c_sq
            best = scores.argmax(axis=1)
            d = (x * x).sum(axis=1) - scores[np.arange(len(x)), best]
        index[i:i + chunk] = best
        dist[i:i + chunk] = np.maximum(d, 0.0)
    return index, dist


def _kmeans_pp(data, k, rng, metric):
    sample = data
    if len(sample) > 50_000:
        sample = data[rng.choice(len(data), 50_000, replace=False)]
    if metric == "cosine":
        sample = _normalize(sample)
    centers = np.empty((k, data.shape[1]), np.float32)
    centers[0] = sample[rng.integers(len(sample))]
    closest = _distance(sample, centers[0], metric)
    for j in range(1, k):
        total = closest.sum()
        if total <= 0:
            centers[j] = sample[rng.integers(len(sample))]
        else:
            centers[j] = sample[rng.choice(len(sample), p=closest / total)]
        closest = np.minimum(closest, _distance(sample, centers[j], metric))
    return centers


def _distance(x, c, metric):
    if metric == "cosine":
        return np.maximum(1.0 - x @ c, 0.0).astype(np.float64)
    diff = x - c
    return (diff * diff).sum(axis=1).astype(np.float64)


def kmeans(data, k, iterations=25, init="kmeans++", metric="euclidean",
           restart_dead_codes=True, seed=0, verbose=False):
    """Lloyd's k-means with dead-code restarts (NumPy, float32).

    Args:
        data: float32 (n, F).
        k: int, number of centroids.
        iterations: int >= 1.
        init: ``"kmeans++"``, ``"random"`` or an array (k, F) of initial centroids.
        metric: ``"euclidean"`` or ``"cosine"`` (spherical k-means:
            centroids renormalised to unit length).
        restart_dead_codes: see :meth:`KMeansTokenizer.fit_codebook`.
        seed: int.
        verbose: print progress.

    Returns:
        (centroids float32 (k, F), history list of dicts, restarts int,
        final assignment int64 (n,)).

    Raises:
        ValueError: fewer rows than ``k``.
    """
    rng = np.random.default_rng(seed)
    data = np.ascontiguousarray(data, np.float32)
    if len(data) < k:
        raise ValueError(
            f"{len(data)} patches cannot fill a codebook of {k}; use more images or a "
            "smaller codebook_size."
        )
    if isinstance(init, np.ndarray) or not isinstance(init, str):
        centroids = np.array(init, np.float32)
        if centroids.shape != (k, data.shape[1]):
            raise ValueError(
                f"initial centroids must have shape {(k, data.shape[1])}; got {centroids.shape}."
            )
    elif init == "kmeans++":
        centroids = _kmeans_pp(data, k, rng, metric)
    elif init == "random":
        centroids = data[rng.choice(len(data), k, replace=False)].copy()
    else:
        raise ValueError(f"`init` must be one of {INITS} or an array; received {init!r}.")
    if metric == "cosine":
        centroids = _normalize(centroids)
        work = _normalize(data)
    else:
        work = data
    history, restarts = [], 0
    assign = None
    for it in range(max(1, int(iterations))):
        assign, dist = nearest_centroids(work, centroids, metric)
        counts = np.bincount(assign, minlength=k)
        sums = np.zeros_like(centroids, dtype=np.float64)
        np.add.at(sums, assign, work)
        alive = counts > 0
        centroids[alive] = (sums[alive] / counts[alive, None]).astype(np.float32)
        dead = np.flatnonzero(~alive)
        history.append({"iteration": it, "inertia": float(dist.mean()),
                        "dead_codes": int(dead.size)})
        if verbose:
            print(f"  k-means iteration {it}: inertia {dist.mean():.5f}, dead codes {dead.size}")
        if restart_dead_codes and dead.size and it < iterations - 2:
            p = dist.astype(np.float64) + 1e-12
            picks = rng.choice(len(work), size=dead.size, replace=False, p=p / p.sum())
            centroids[dead] = work[picks]
            restarts += int(dead.size)
        if metric == "cosine":
            centroids = _normalize(centroids)
    assign, dist = nearest_centroids(work, centroids, metric)
    history.append({"iteration": len(history), "inertia": float(dist.mean()),
                    "dead_codes": int(k - np.unique(assign).size)})
    return centroids.astype(np.float32), history, restarts, assign

