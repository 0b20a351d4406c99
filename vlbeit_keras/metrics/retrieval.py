"""Image-text retrieval recall@K, with ground truth matched by image id.

Protocol (MODEL_SPEC §9.3; the COCO / Flickr30K Karpathy-split convention):

- **TR** (text retrieval, image -> text): for each image, rank all texts by
  the image's scores; the image is a hit at K if at least one of *its own*
  texts is among the first K. TR@K = hits / number of images.
- **IR** (image retrieval, text -> image): for each text, rank all images; a
  hit at K if the text's image is among the first K. IR@K = hits / texts.
- Ownership comes from ids: ``text_image_ids[t]`` is the id of the image that
  text t describes and ``image_ids[i]`` the id of gallery row i. Any number of
  texts per image, in any order; never derived from index arithmetic.
- **Duplicate captions** (optional ``text_keys``, e.g. normalised caption
  strings): the standard protocol counts only a text's own image as
  correct, so when several images carry the *same* caption ("one circle",
  "a man riding a wave on a surfboard") identical texts tie and R@1 reads
  the tie order. With ``text_keys`` a text is also correct for every image
  that owns a text with the same key (TR: the image is a hit when any text
  equal to one of its captions is in the top K; IR: the text is a hit when
  any image with that caption is). The evaluation of
  :mod:`vlbeit_keras.tasks.retrieval` reports both (``dedup_`` prefix).
- **Ties**: equal scores are ordered by index, lower index first (a stable
  descending sort): the 0-based rank of item j is the number of items with a
  strictly higher score plus the number with an equal score and a smaller
  index. When K is at least the gallery size every query is a hit.

Ranks are computed by counting, O(images x texts) memory-light passes, so the
COCO 5K test split (5,000 x 25,010) fits easily.
"""

import numpy as np

DEFAULT_KS = (1, 5, 10)


def _as_ids(ids, name):
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D; got shape {ids.shape}.")
    return ids


def _index_of(image_ids):
    index = {}
    for i, image_id in enumerate(image_ids.tolist()):
        if image_id in index:
            raise ValueError(
                f"Image id {image_id!r} appears twice in the gallery (rows "
                f"{index[image_id]} and {i}); de-duplicate images first "
                "(see `unique_images`)."
            )
        index[image_id] = i
    return index


def _validate(scores, image_ids, text_image_ids):
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"Scores must be a 2-D matrix; got shape {scores.shape}.")
    image_ids = _as_ids(image_ids, "image_ids")
    text_image_ids = _as_ids(text_image_ids, "text_image_ids")
    n_images, n_texts = len(image_ids), len(text_image_ids)
    if scores.shape != (n_images, n_texts):
        raise ValueError(
            f"Scores have shape {scores.shape} but there are {n_images} images "
            f"and {n_texts} texts; expected ({n_images}, {n_texts})."
        )
    index = _index_of(image_ids)
    owner = np.empty(n_texts, dtype=np.int64)
    unknown = []
    for t, image_id in enumerate(text_image_ids.tolist()):
        if image_id not in index:
            unknown.append((t, image_id))
            continue
        owner[t] = index[image_id]
    if unknown:
        raise ValueError(
            f"{len(unknown)} texts name an image id absent from the gallery, "
            f"e.g. (text index, image id) {unknown[:5]}."
        )
    orphans = np.setdiff1d(np.arange(n_images), owner)
    if orphans.size:
        raise ValueError(
            f"{orphans.size} gallery images own no text (TR is undefined for "
            f"them), e.g. image ids {image_ids[orphans[:5]].tolist()}."
        )
    return scores, owner


def _stable_rank(row, j):
    """0-based rank of item j in ``row`` under the stable descending order."""
    value = row[j]
    return int(np.count_nonzero(row > value) + np.count_nonzero(row[:j] == value))


def _key_groups(owner, text_keys, n_texts):
    """(key index per text int64 (n_texts,), image rows per key list of arrays)."""
    keys = np.asarray(text_keys, dtype=object)
    if keys.shape != (n_texts,):
        raise ValueError(f"`text_keys` must have shape ({n_texts},); got {keys.shape}.")
    index = {}
    key_of = np.array([index.setdefault(k, len(index)) for k in keys.tolist()], dtype=np.int64)
    images = [set() for _ in index]
    for t, k in enumerate(key_of.tolist()):
        images[k].add(int(owner[t]))
    return key_of, [np.array(sorted(v), dtype=np.int64) for v in images]


def _best_rank(row, candidates):
    """Smallest stable rank in ``row`` among the sorted index array ``candidates``."""
    # Rank is monotone in (score desc, index asc): the best candidate is the
    # highest-scoring one, lowest index among equals (argmax takes the first).
    return _stable_rank(row, candidates[np.argmax(row[candidates])])


def text_retrieval_ranks(i2t_scores, image_ids, text_image_ids, text_keys=None):
    """Best rank of an own text for every image (TR).

    Args:
        i2t_scores: float (n_images, n_texts); row i scores every text for
            image i (higher = better).
        image_ids: (n_images,) unique ids of the gallery images.
        text_image_ids: (n_texts,) id of the image each text describes.
        text_keys: optional (n_texts,) hashable keys; a text whose key
            equals that of one of image i's texts counts as image i's own.

    Returns:
        int64 (n_images,): the smallest 0-based rank among the image's texts.
    """
    scores, owner = _validate(i2t_scores, image_ids, text_image_ids)
    if text_keys is not None:
        key_of, _ = _key_groups(owner, text_keys, len(owner))
    ranks = np.empty(scores.shape[0], dtype=np.int64)
    for i in range(scores.shape[0]):
        own = np.flatnonzero(owner == i)
        if text_keys is not None:
            own = np.flatnonzero(np.isin(key_of, key_of[own]))
        ranks[i] = _best_rank(scores[i], own)
    return ranks


def image_retrieval_ranks(t2i_scores, image_ids, text_image_ids, text_keys=None):
    """Rank of the own image for every text (IR).

    Args:
        t2i_scores: float (n_texts, n_images); row t scores every image for
            text t.
        image_ids, text_image_ids, text_keys: as in :func:`text_retrieval_ranks`
            (with ``text_keys``, every image owning a text with text t's key
            is correct for t).

    Returns:
        int64 (n_texts,) 0-based ranks.
    """
    t2i_scores = np.asarray(t2i_scores)
    scores, owner = _validate(t2i_scores.T, image_ids, text_image_ids)
    del scores
    if text_keys is None:
        return np.array(
            [_stable_rank(t2i_scores[t], owner[t]) for t in range(t2i_scores.shape[0])],
            dtype=np.int64,
        )
    key_of, images = _key_groups(owner, text_keys, len(owner))
    return np.array(
        [_best_rank(t2i_scores[t], images[key_of[t]]) for t in range(t2i_scores.shape[0])],
        dtype=np.int64,
    )


def recall_at_k(ranks, ks=DEFAULT_KS):
    """dict K -> fraction of queries with rank < K."""
    ranks = np.asarray(ranks)
    return {k: float(np.count_nonzero(ranks < k)) / len(ranks) for k in ks}


def retrieval_recall(similarity, image_ids, text_image_ids, ks=DEFAULT_KS, t2i_scores=None,
                     text_keys=None):
    """TR@K and IR@K for a score matrix.

    Args:
        similarity: float (n_images, n_texts), row = image, column = text,
            used for TR (and for IR unless ``t2i_scores`` is given).
        image_ids: (n_images,) unique gallery image ids.
        text_image_ids: (n_texts,) image id of each text.
        ks: recall cut-offs (1, 5, 10).
        t2i_scores: optional (n_texts, n_images) scores for IR when they
            differ from ``similarity.T`` (e.g. after ITM re-ranking, which
            re-scores a different top-k per direction).
        text_keys: optional (n_texts,) keys merging duplicate captions
            (module docstring); None = the standard protocol.

    Returns:
        dict ``tr_r{K}`` and ``ir_r{K}`` -> fraction in [0, 1], plus
        ``tr_mean``, ``ir_mean`` and ``r_mean`` (the mean of all six for
        ks=(1, 5, 10), the usual "RSUM / 6").

    Raises:
        ValueError: shapes disagree, duplicate gallery ids, a text naming an
            unknown image, or an image with no text.
    """
    similarity = np.asarray(similarity)
    if t2i_scores is None:
        t2i_scores = similarity.T
    tr = recall_at_k(text_retrieval_ranks(similarity, image_ids, text_image_ids, text_keys), ks)
    ir = recall_at_k(image_retrieval_ranks(t2i_scores, image_ids, text_image_ids, text_keys), ks)
    out = {f"tr_r{k}": v for k, v in tr.items()}
    out.update({f"ir_r{k}": v for k, v in ir.items()})
    out["tr_mean"] = float(np.mean(list(tr.values())))
    out["ir_mean"] = float(np.mean(list(ir.values())))
    out["r_mean"] = (out["tr_mean"] + out["ir_mean"]) / 2
    return out


def unique_images(image_ids):
    """Positions of the first occurrence of every image id, in order.

    Retrieval datasets often repeat an image once per caption; the gallery
    must hold each image once.

    Args:
        image_ids: sequence of hashable ids, one per record.

    Returns:
        (unique_ids list, first_positions int64 array).
    """
    seen = {}
    for i, image_id in enumerate(list(image_ids)):
        if image_id not in seen:
            seen[image_id] = i
    return list(seen), np.array(list(seen.values()), dtype=np.int64)
