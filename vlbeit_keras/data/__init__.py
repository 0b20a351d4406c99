"""Data: tokenizers, masking, image preprocessing, dataset readers and input pipelines."""
