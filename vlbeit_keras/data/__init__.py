"""Data for vlbeit_keras: tokenizers, dataset readers and the input pipeline.

See ``docs/data.md``.
"""
