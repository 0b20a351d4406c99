"""Dataset readers: official annotation formats -> lists of plain record dicts.

Every reader returns a :class:`RecordList` (a ``list`` of dicts) with the
canonical keys below, so the input pipeline and the tasks consume all formats
the same way:

==============  =============================================================
key             meaning
==============  =============================================================
``image``       str, path of the image (single-image records)
``images``      list of str, image paths (NLVR2: 2, NLVR v1: 6)
``text``        str, caption / question / statement (stripped, non-empty)
``image_id``    str, groups records of one image (retrieval ground truth)
``split``       str or None
``source``      str, ``"path:line"`` or ``"path#record"`` for messages
``answers``     list of str, annotator answers (VQA v2: 10; DAQUAR: 1)
``answer``      str, the majority / reference answer
``question_id`` int
``label``       bool (NLVR, NLVR2; generic files) or int class (image folder)
``identifier``  str, the dataset's own example id (NLVR, NLVR2)
==============  =============================================================

Bad records are skipped with a counted :class:`DataSkipWarning`, or raise
:class:`DataError` with ``strict=True``; pass one :class:`SkipReport` to
several readers (and the pipeline) and print ``report.summary()`` at the end
of a run. Readers are registered by name in the ``datasets`` registry
(``vlbeit_keras.get_registry("datasets").get("coco_captions")``); see
``docs/data.md``.
"""

from vlbeit_keras.data.readers.coco import read_coco_captions
from vlbeit_keras.data.readers.daquar import read_daquar
from vlbeit_keras.data.readers.flickr8k import read_flickr8k
from vlbeit_keras.data.readers.flickr8k import read_split_list
from vlbeit_keras.data.readers.image_folder import IMAGE_EXTENSIONS
from vlbeit_keras.data.readers.image_folder import read_image_folder
from vlbeit_keras.data.readers.image_text import read_image_text
from vlbeit_keras.data.readers.karpathy import read_karpathy
from vlbeit_keras.data.readers.nlvr import read_nlvr
from vlbeit_keras.data.readers.nlvr import read_nlvr2
from vlbeit_keras.data.readers.report import DEFAULT_MAX_TEXT_CHARS
from vlbeit_keras.data.readers.report import DataError
from vlbeit_keras.data.readers.report import DataSkipWarning
from vlbeit_keras.data.readers.report import RecordList
from vlbeit_keras.data.readers.report import Skip
from vlbeit_keras.data.readers.report import SkipReport
from vlbeit_keras.data.readers.splits import split_records
from vlbeit_keras.data.readers.text_corpus import read_text_corpus
from vlbeit_keras.data.readers.vqa import VQA_EVAL_REVISION
from vlbeit_keras.data.readers.vqa import answer_target_vector
from vlbeit_keras.data.readers.vqa import answer_targets
from vlbeit_keras.data.readers.vqa import attach_answer_targets
from vlbeit_keras.data.readers.vqa import build_answer_vocab
from vlbeit_keras.data.readers.vqa import normalize_vqa_answer
from vlbeit_keras.data.readers.vqa import read_vqa_v2
from vlbeit_keras.data.readers.vqa import vqa_soft_score

# Registry name -> reader, registered by vlbeit_keras.default_plugins.datasets.
READERS = {
    "coco_captions": read_coco_captions,
    "karpathy": read_karpathy,
    "vqa_v2": read_vqa_v2,
    "nlvr2": read_nlvr2,
    "nlvr": read_nlvr,
    "flickr8k": read_flickr8k,
    "daquar": read_daquar,
    "image_folder": read_image_folder,
    "text_corpus": read_text_corpus,
    "image_text": read_image_text,
}


def read_dataset(name, **kwargs):
    """Read a dataset by its registered name: ``get_registry("datasets").get(name)(**kwargs)``.

    Raises:
        vlbeit_keras.plugins.UnknownNameError: ``name`` is not registered
            (the message lists the known names).
    """
    from vlbeit_keras.plugins import get_registry

    return get_registry("datasets").get(name)(**kwargs)
