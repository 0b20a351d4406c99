"""Keras layers of the VL-BEiT backbone."""

from vlbeit_keras.layers.attention import MultiHeadSelfAttention
from vlbeit_keras.layers.embeddings import PatchEmbedding
from vlbeit_keras.layers.embeddings import TextEmbedding
from vlbeit_keras.layers.feed_forward_expert import FeedForwardExpert
from vlbeit_keras.layers.mome_block import MoMEBlock
from vlbeit_keras.layers.mome_encoder import MoMEEncoder
from vlbeit_keras.layers.relative_position_bias import RelativePositionBias
