"""Built-in visual tokenizers (MIM targets)."""

from vlbeit_keras.hookspecs import hookimpl


@hookimpl
def register_visual_tokenizers(register):
    from vlbeit_keras.data.visual_tokenizers import KMeansTokenizer
    from vlbeit_keras.data.visual_tokenizers import RandomProjectionTokenizer

    register("random_projection", RandomProjectionTokenizer)
    register("kmeans", KMeansTokenizer)
