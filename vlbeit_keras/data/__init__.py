"""Data for vlbeit_keras: tokenizers, dataset readers, masking, image
preprocessing, visual tokenizers, the input pipeline and the demo corpus.

See ``docs/data.md``.
"""
