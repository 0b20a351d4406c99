"""Embedded demo corpus: synthetic scenes of coloured shapes with texts.

So that every recipe runs with no data on disk, this module generates, from a
seed, scenes of 1-4 shapes (circle / square / triangle in five colours, at
random non-overlapping positions and sizes) rendered at any size, with:

- captions (three per image, listing the shapes left to right, counting them,
  naming their colours);
- VQA-style questions and answers of seven types (counting all shapes,
  counting a colour, counting a shape, colour of a shape, shape of a colour,
  existence, relative position);
- NLVR2-style true/false statements over image pairs and NLVR-style
  statements over single images;
- a text corpus for MLM and a whole-word vocabulary covering every text.

It is learnable but not solvable from text alone: the answer of each question
type is drawn uniformly from that type's answer set *before* the scene is
drawn (scenes are rejection-sampled until they agree), and each statement's
label is drawn true/false 50/50 the same way. So the question text carries no
information about the answer, while the pixels determine it (shapes never
touch and differ in colour and fill ratio; ``tests/data/test_demo_corpus.py``
recovers the scene from the pixels).

Determinism: example ``i`` of a task depends only on ``(seed, task, i)``, so
``demo_records(task, n)`` is a prefix of ``demo_records(task, m)`` for m > n.

Images are **PNG bytes** in the records (``record["image"]`` is ``bytes``;
pairs carry ``record["images"]``, a list of two ``bytes``): compact, and they
go through the same decoding path as files on disk. The pipelines of
:mod:`vlbeit_keras.data.pipeline` accept file paths (str) and encoded bytes
alike.
"""

import functools
import io
import math

import numpy as np

TASKS = ("images", "captions", "vqa", "nlvr2", "nlvr", "text")
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 70),
    "blue": (40, 90, 230),
    "yellow": (240, 210, 40),
    "purple": (150, 60, 190),
}
SHAPES = ("circle", "square", "triangle")
BACKGROUND = (200, 200, 200)
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight")
MAX_OBJECTS = 4
QUESTION_TYPES = (
    "count_all", "count_color", "count_shape", "color", "shape", "exist", "position",
)
_QUESTION_ANSWERS = {
    "count_all": ("1", "2", "3", "4"),
    "count_color": ("0", "1", "2", "3"),
    "count_shape": ("0", "1", "2", "3"),
    "color": tuple(COLORS),
    "shape": SHAPES,
    "exist": ("yes", "no"),
    "position": ("yes", "no"),
}
_TASK_CODES = {name: i + 1 for i, name in enumerate(TASKS)}
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_WORDS = (
    ",", ".", "?",
    "a", "all", "and", "are", "both", "color", "contain", "contains", "exactly",
    "from", "how", "image", "images", "in", "is", "left", "many", "more", "object", "of",
    "right", "scene", "shape", "shapes", "than", "the", "there", "to", "total", "two",
    "what", "with",
    "circles", "squares", "triangles",
)


# ---------------------------------------------------------------------------
# Scenes
# ---------------------------------------------------------------------------


def _plural(shape):
    return shape + "s"


def _layout(rng, aspect, n):
    """n non-overlapping placements ``(x, y, r)``, sorted left to right.

    Coordinates: ``x`` in [0, 1] of the width, ``y`` in [0, 1] of the height,
    ``r`` the radius / half side as a fraction of the shorter side. Shapes keep
    a gap of at least 0.04 of the shorter side (so they never touch) and their
    centres are at least 0.08 of the width apart horizontally, so "left of" is
    unambiguous.
    """
    width_units = max(aspect, 1.0)  # width / shorter side
    height_units = max(1.0 / aspect, 1.0)
    for _ in range(200):
        placed = []
        for _ in range(n):
            for _ in range(50):
                r = float(rng.uniform(0.09, 0.14))
                x = float(rng.uniform(r / width_units + 0.02, 1 - r / width_units - 0.02))
                y = float(rng.uniform(r / height_units + 0.02, 1 - r / height_units - 0.02))
                if all(
                    math.hypot((x - px) * width_units, (y - py) * height_units)
                    >= 1.3 * (r + pr) + 0.04 and abs(x - px) >= 0.08
                    for px, py, pr in placed
                ):
                    placed.append((x, y, r))
                    break
            else:
                break
        if len(placed) == n:
            return sorted(placed)
    raise RuntimeError(
        f"could not place {n} shapes at aspect ratio {aspect:.2f}; use a less extreme one"
    )


def _make_scene(rng, aspect, attributes):
    """Scene from a list of (color, shape) pairs, placed left to right in that order."""
    return [
        {"shape": shape, "color": color, "x": x, "y": y, "r": r}
        for (color, shape), (x, y, r) in zip(attributes, _layout(rng, aspect, len(attributes)))
    ]


def _random_attributes(rng, n, exclude=lambda color, shape: False):
    out = []
    while len(out) < n:
        color, shape = _random_color(rng), _random_shape(rng)
        if not exclude(color, shape):
            out.append((color, shape))
    return out


def _sample_scene(rng, aspect, num_objects=None):
    """Random scene of 1-4 shapes with uniform colours and shapes."""
    n = int(rng.integers(1, MAX_OBJECTS + 1)) if num_objects is None else num_objects
    return _make_scene(rng, aspect, _random_attributes(rng, n))


def render_scene(scene, image_size, supersample=4):
    """Render a scene to uint8 RGB (height, width, 3) with PIL.

    Args:
        scene: list of objects as made by the demo generator.
        image_size: int or (height, width) in pixels.
        supersample: int, drawn at this multiple then box-downsampled
            (anti-aliasing).

    Returns:
        uint8 ndarray (height, width, 3).
    """
    from PIL import Image
    from PIL import ImageDraw

    from vlbeit_keras.data.image_preprocessing import image_size_pair

    height, width = image_size_pair(image_size)
    big_h, big_w = height * supersample, width * supersample
    image = Image.new("RGB", (big_w, big_h), BACKGROUND)
    draw = ImageDraw.Draw(image)
    unit = min(big_h, big_w)
    for o in scene:
        cx, cy, r = o["x"] * big_w, o["y"] * big_h, o["r"] * unit
        color = COLORS[o["color"]]
        if o["shape"] == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
        elif o["shape"] == "square":
            s = r * 0.9
            draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=color)
        else:
            draw.polygon(
                [(cx, cy - r), (cx - r * 1.1, cy + r * 0.8), (cx + r * 1.1, cy + r * 0.8)],
                fill=color,
            )
    if supersample > 1:
        image = image.resize((width, height), Image.Resampling.BOX)
    return np.asarray(image, dtype=np.uint8)


def encode_png(array):
    """uint8 (h, w, 3) -> PNG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(array, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _count(scene, color=None, shape=None):
    return sum(
        1 for o in scene
        if (color is None or o["color"] == color) and (shape is None or o["shape"] == shape)
    )


def _find(scene, color=None, shape=None):
    return [o for o in scene if (color is None or o["color"] == color)
            and (shape is None or o["shape"] == shape)]


# ---------------------------------------------------------------------------
# Texts
# ---------------------------------------------------------------------------


def _object_phrase(o):
    return f"a {o['color']} {o['shape']}"


def _join(phrases):
    if len(phrases) == 1:
        return phrases[0]
    return " , ".join(phrases[:-1]) + " and " + phrases[-1]


def _captions(scene):
    listing = _join([_object_phrase(o) for o in scene])
    if len(scene) == 2:
        first = f"{_object_phrase(scene[0])} left of {_object_phrase(scene[1])}"
    else:
        first = f"{listing} from left to right"
    counts = []
    for shape in SHAPES:
        k = _count(scene, shape=shape)
        if k:
            counts.append(f"{NUMBER_WORDS[k]} {shape if k == 1 else _plural(shape)}")
    colors = [c for c in COLORS if _count(scene, color=c)]
    colour_text = _join(colors)
    noun = "shape" if len(scene) == 1 else "shapes"
    return [
        first,
        _join(counts),
        f"a scene with {colour_text} {noun}",
    ]


def _random_color(rng):
    return list(COLORS)[int(rng.integers(len(COLORS)))]


def _random_shape(rng):
    return SHAPES[int(rng.integers(len(SHAPES)))]


def _make_question(rng, qtype):
    """(question text, answer function scene -> answer or None, parameters)."""
    if qtype == "count_all":
        return "how many shapes are there ?", lambda s: str(len(s)), {}
    if qtype == "count_color":
        c = _random_color(rng)
        return (f"how many {c} shapes are there ?", lambda s: str(_count(s, color=c)),
                {"color": c})
    if qtype == "count_shape":
        sh = _random_shape(rng)
        return (f"how many {_plural(sh)} are there ?", lambda s: str(_count(s, shape=sh)),
                {"shape": sh})
    if qtype == "color":
        sh = _random_shape(rng)

        def color_answer(s):
            found = _find(s, shape=sh)
            return found[0]["color"] if len(found) == 1 else None

        return f"what color is the {sh} ?", color_answer, {"shape": sh}
    if qtype == "shape":
        c = _random_color(rng)

        def shape_answer(s):
            found = _find(s, color=c)
            return found[0]["shape"] if len(found) == 1 else None

        return f"what shape is the {c} object ?", shape_answer, {"color": c}
    if qtype == "exist":
        c, sh = _random_color(rng), _random_shape(rng)
        return (f"is there a {c} {sh} ?", lambda s: "yes" if _count(s, c, sh) else "no",
                {"color": c, "shape": sh})
    # position
    c1, s1 = _random_color(rng), _random_shape(rng)
    while True:
        c2, s2 = _random_color(rng), _random_shape(rng)
        if (c2, s2) != (c1, s1):
            break
    side = "left" if rng.random() < 0.5 else "right"

    def position_answer(s):
        a, b = _find(s, c1, s1), _find(s, c2, s2)
        if len(a) != 1 or len(b) != 1:
            return None
        is_left = a[0]["x"] < b[0]["x"]
        return "yes" if is_left == (side == "left") else "no"

    return (f"is the {c1} {s1} {side} of the {c2} {s2} ?", position_answer,
            {"a": (c1, s1), "b": (c2, s2), "side": side})


def _vqa_attributes(rng, qtype, params, answer):
    """(color, shape) list, in left-to-right order, whose answer is ``answer``."""

    def shuffled(items):
        items = list(items)
        rng.shuffle(items)
        return items

    if qtype == "count_all":
        return _random_attributes(rng, int(answer))
    if qtype in ("count_color", "count_shape"):
        k = int(answer)
        n = int(rng.integers(max(k, 1), MAX_OBJECTS + 1))
        if qtype == "count_color":
            c = params["color"]
            hits = [(c, _random_shape(rng)) for _ in range(k)]
            rest = _random_attributes(rng, n - k, lambda color, shape: color == c)
        else:
            sh = params["shape"]
            hits = [(_random_color(rng), sh) for _ in range(k)]
            rest = _random_attributes(rng, n - k, lambda color, shape: shape == sh)
        return shuffled(hits + rest)
    n = int(rng.integers(1, MAX_OBJECTS + 1))
    if qtype == "color":
        sh = params["shape"]
        rest = _random_attributes(rng, n - 1, lambda color, shape: shape == sh)
        return shuffled([(answer, sh)] + rest)
    if qtype == "shape":
        c = params["color"]
        rest = _random_attributes(rng, n - 1, lambda color, shape: color == c)
        return shuffled([(c, answer)] + rest)
    if qtype == "exist":
        target = (params["color"], params["shape"])
        if answer == "yes":
            return shuffled([target] + _random_attributes(rng, n - 1))
        return _random_attributes(rng, n, lambda color, shape: (color, shape) == target)
    # position: exactly one A and one B, A left of B iff the answer says so.
    n = int(rng.integers(2, MAX_OBJECTS + 1))
    a, b = params["a"], params["b"]
    rest = _random_attributes(rng, n - 2, lambda color, shape: (color, shape) in (a, b))
    is_left = (answer == "yes") == (params["side"] == "left")
    i, j = sorted(rng.choice(n, size=2, replace=False).tolist())
    first, second = (a, b) if is_left else (b, a)
    out = list(rest)
    out.insert(i, first)
    out.insert(j, second)
    return out


def _single_statement(rng):
    """NLVR-style statement over one scene: (text, predicate)."""
    kind = int(rng.integers(5))
    if kind == 0:
        c, sh = _random_color(rng), _random_shape(rng)
        return f"there is a {c} {sh}", lambda s: _count(s, c, sh) > 0
    if kind == 1:
        sh, k = _random_shape(rng), int(rng.integers(1, 3))
        noun = sh if k == 1 else _plural(sh)
        verb = "is" if k == 1 else "are"
        return f"there {verb} exactly {NUMBER_WORDS[k]} {noun}", lambda s: _count(s, shape=sh) == k
    if kind == 2:
        c, k = _random_color(rng), int(rng.integers(1, 3))
        noun = "shape" if k == 1 else "shapes"
        verb = "is" if k == 1 else "are"
        return (f"there {verb} exactly {NUMBER_WORDS[k]} {c} {noun}",
                lambda s: _count(s, color=c) == k)
    if kind == 3:
        c1 = _random_color(rng)
        c2 = _random_color(rng)
        return (f"there is a {c1} shape left of a {c2} shape",
                lambda s: any(a["color"] == c1 and b["color"] == c2 and a["x"] < b["x"]
                              for a in s for b in s if a is not b))
    s1 = _random_shape(rng)
    s2 = SHAPES[(SHAPES.index(s1) + 1 + int(rng.integers(2))) % 3]
    return (f"there are more {_plural(s1)} than {_plural(s2)}",
            lambda s: _count(s, shape=s1) > _count(s, shape=s2))


def _pair_statement(rng):
    """NLVR2-style statement over (left scene, right scene): (text, predicate)."""
    kind = int(rng.integers(5))
    side = "left" if rng.random() < 0.5 else "right"
    pick = (lambda a, b: a) if side == "left" else (lambda a, b: b)
    if kind == 0:
        c, sh = _random_color(rng), _random_shape(rng)
        return (f"there is a {c} {sh} in the {side} image",
                lambda a, b: _count(pick(a, b), c, sh) > 0)
    if kind == 1:
        c, k = _random_color(rng), int(rng.integers(1, 3))
        noun = "shape" if k == 1 else "shapes"
        return (f"the {side} image contains exactly {NUMBER_WORDS[k]} {c} {noun}",
                lambda a, b: _count(pick(a, b), color=c) == k)
    if kind == 2:
        if rng.random() < 0.5:
            c = _random_color(rng)
            return (f"both images contain a {c} shape",
                    lambda a, b: _count(a, color=c) > 0 and _count(b, color=c) > 0)
        sh = _random_shape(rng)
        return (f"both images contain a {sh}",
                lambda a, b: _count(a, shape=sh) > 0 and _count(b, shape=sh) > 0)
    if kind == 3:
        sh = _random_shape(rng)
        return (f"the left image contains more {_plural(sh)} than the right image",
                lambda a, b: _count(a, shape=sh) > _count(b, shape=sh))
    k = int(rng.integers(3, 7))
    return (f"there are {NUMBER_WORDS[k]} shapes in total in the two images",
            lambda a, b: len(a) + len(b) == k)


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------


def demo_vocabulary():
    """Whole-word WordPiece vocabulary of the demo corpus (no file needed).

    ``[PAD]`` = 0, ``[UNK]`` = 1, ``[CLS]`` = 2, ``[SEP]`` = 3, ``[MASK]`` = 4,
    then punctuation, colours, shapes, number words and the template words,
    sorted; every demo text tokenizes without ``[UNK]``. Fits the tiny
    preset's 100-id vocabulary.

    Returns:
        list of str.
    """
    words = set(_WORDS) | set(COLORS) | set(SHAPES) | set(NUMBER_WORDS)
    words |= {"object", "is", "are"}
    return list(SPECIAL_TOKENS) + sorted(words - set(SPECIAL_TOKENS))


def demo_tokenizer():
    """The project's WordPiece tokenizer over :func:`demo_vocabulary`.

    A :class:`vlbeit_keras.data.text_tokenizer.VLBEiTTokenizer` (uncased,
    accent stripping, ``[PAD] [UNK] [CLS] [SEP] [MASK]`` at ids 0-4; ``pack``
    for fixed-length ``[CLS] ... [SEP]`` inputs).
    """
    from vlbeit_keras.data.text_tokenizer import VLBEiTTokenizer

    return VLBEiTTokenizer(vocabulary=demo_vocabulary())


def demo_answer_vocabulary():
    """All VQA answers of the demo corpus, in a fixed order (list of str)."""
    answers = []
    for qtype in QUESTION_TYPES:
        for answer in _QUESTION_ANSWERS[qtype]:
            if answer not in answers:
                answers.append(answer)
    return answers


def _example_rng(seed, task, index):
    return np.random.default_rng([int(seed), _TASK_CODES[task], int(index)])


def _proto_scene(attributes):
    """Attributes with placeholder coordinates in left-to-right order.

    Every predicate compares only the x order, which :func:`_make_scene` keeps,
    so rejection sampling can test attributes before placing anything.
    """
    return [{"color": c, "shape": sh, "x": float(k)} for k, (c, sh) in enumerate(attributes)]


def _sample_until(rng, aspect, predicate, tries=20000, pair=False):
    """Rejection-sample scene attributes until ``predicate`` holds, then lay them out."""

    def draw():
        return _random_attributes(rng, int(rng.integers(1, MAX_OBJECTS + 1)))

    for _ in range(tries):
        if pair:
            attrs = (draw(), draw())
            if predicate(_proto_scene(attrs[0]), _proto_scene(attrs[1])):
                return tuple(_make_scene(rng, aspect, a) for a in attrs)
        else:
            attrs = draw()
            if predicate(_proto_scene(attrs)):
                return _make_scene(rng, aspect, attrs)
    return None


def _public_scene(scene):
    return [dict(o) for o in scene]


@functools.lru_cache(maxsize=16)
def _cached(task, num_examples, seed, image_size):
    return tuple(_generate(task, num_examples, seed, image_size))


def demo_records(task="captions", num_examples=256, seed=0, image_size=64, split=None):
    """Records of the demo corpus, in the dataset readers' record schema.

    Args:
        task: one of :data:`TASKS`:
            ``"images"``: ``{"image", "image_id", "scene", "source"}``;
            ``"captions"``: one record per caption, three per image:
            ``{"image", "text", "image_id", "scene", "source"}``;
            ``"vqa"``: ``{"image", "text" (question), "answers" (ten copies of
            the answer: ten agreeing annotators), "label" (the answer str),
            "question_type", "question_id" (int), "image_id", "scene", "source"}``;
            ``"nlvr2"``: ``{"images" (two PNGs: left, right), "text", "label"
            (1 true / 0 false), "identifier", "scenes", "source"}``;
            ``"nlvr"``: ``{"image", "text", "label", "identifier", "scene", "source"}``;
            ``"text"``: ``{"text", "source"}`` (captions and statements).
        num_examples: int, number of images (captions: images; the records
            are 3x as many), questions, statements or sentences.
        seed: int; different splits should use different seeds (``split``
            does that for you).
        image_size: int or (height, width) of the rendered PNGs.
        split: optional ``"train"``/``"val"``/``"test"``: offsets the seed
            by 0/1000/2000.

    Returns:
        list of dict. ``image``/``images`` values are PNG ``bytes``.

    Raises:
        ValueError: unknown task or split.
    """
    if task not in TASKS:
        raise ValueError(f"Unknown demo task {task!r}; known tasks: {', '.join(TASKS)}.")
    offsets = {None: 0, "train": 0, "val": 1000, "test": 2000}
    if split not in offsets:
        raise ValueError(f"Unknown split {split!r}; use train, val or test.")
    from vlbeit_keras.data.image_preprocessing import image_size_pair

    size = image_size_pair(image_size)
    records = _cached(task, int(num_examples), int(seed) + offsets[split], size)
    return [dict(r) for r in records]


def demo_text_corpus(num_sentences=1000, seed=0):
    """Sentences for MLM: captions and statements of the demo corpus (list of str)."""
    return [r["text"] for r in demo_records("text", num_sentences, seed=seed)]


def _generate(task, num_examples, seed, size):
    height, width = size
    aspect = width / height
    out = []
    for i in range(num_examples):
        rng = _example_rng(seed, task, i)
        if task in ("images", "captions"):
            scene = _sample_scene(rng, aspect)
            png = encode_png(render_scene(scene, size))
            image_id = f"demo-{seed}-{i}"
            if task == "images":
                out.append({"image": png, "image_id": image_id, "scene": _public_scene(scene),
                            "source": "demo"})
            else:
                for caption in _captions(scene):
                    out.append({"image": png, "text": caption, "image_id": image_id,
                                "scene": _public_scene(scene), "source": "demo"})
        elif task == "vqa":
            qtype = QUESTION_TYPES[i % len(QUESTION_TYPES)]
            choices = _QUESTION_ANSWERS[qtype]
            # The answer is drawn first, uniformly: the question text carries
            # no information about it.
            answer = choices[int(rng.integers(len(choices)))]
            question, answer_fn, params = _make_question(rng, qtype)
            scene = _make_scene(rng, aspect, _vqa_attributes(rng, qtype, params, answer))
            if answer_fn(scene) != answer:  # pragma: no cover - generator invariant
                raise AssertionError(f"demo VQA generator bug: {question!r} {answer!r} {scene}")
            out.append({
                "image": encode_png(render_scene(scene, size)), "text": question,
                "answers": [answer] * 10, "label": answer, "question_type": qtype,
                "question_id": i, "image_id": f"demo-vqa-{seed}-{i}",
                "scene": _public_scene(scene), "source": "demo",
            })
        elif task == "nlvr2":
            label = int(rng.random() < 0.5)
            while True:
                text, predicate = _pair_statement(rng)
                scenes = _sample_until(rng, aspect, lambda a, b: predicate(a, b) == bool(label),
                                       pair=True)
                if scenes is not None:
                    break
            out.append({
                "images": [encode_png(render_scene(s, size)) for s in scenes],
                "text": text, "label": label, "identifier": f"demo-nlvr2-{seed}-{i}-0",
                "scenes": [_public_scene(s) for s in scenes], "source": "demo",
            })
        elif task == "nlvr":
            label = int(rng.random() < 0.5)
            while True:
                text, predicate = _single_statement(rng)
                scene = _sample_until(rng, aspect, lambda s: predicate(s) == bool(label))
                if scene is not None:
                    break
            out.append({
                "image": encode_png(render_scene(scene, size)), "text": text, "label": label,
                "identifier": f"demo-nlvr-{seed}-{i}-0", "scene": _public_scene(scene),
                "source": "demo",
            })
        else:  # text
            kind = i % 3
            if kind == 0:
                captions = _captions(_sample_scene(rng, aspect))
                text = captions[int(rng.integers(len(captions)))]
            elif kind == 1:
                text = _single_statement(rng)[0]
            else:
                text = _pair_statement(rng)[0]
            out.append({"text": text, "source": "demo"})
    return out
