"""Built-in VL-BEiT backbone presets (configurations; no weights exist).

Sizes follow MODEL_SPEC.md §5: Base/Large/Base+ are VLMo's shapes (VLMo
``multiway_transformer.py`` ``vlmo_base_patch16`` etc.); tiny and small are
this project's test and CPU-demo sizes. Parameter counts are backbone only
(embeddings, relative table, blocks, final norm, pooler), no pretraining heads.
"""

_COMMON = {
    "patch_size": 16,
    "image_size": 224,
    "max_text_length": 40,
    "relative_text_length": 196,
    "vocabulary_size": 30522,
    "position_mode": "relative",
    "layerscale_init": 0.1,
}

# The two CPU-scale presets train from scratch on small data. BEiT / VLMo's
# N(0, 0.02) initialisation is tuned for d = 768; at d = 128 it leaves every
# residual branch ~6x weaker against the embeddings than at d = 768, and
# fused image-text tasks sat at chance for ~1,000 steps. These presets use
# fan-in scaling (std = d ** -0.5) and mean pooling (masked-prediction
# pretraining never trains [CLS]); fused inputs pool their text rows, as
# VLMo's fused [T_CLS] is a text row; docs/training_health.md has the runs.
_SMALL_MODEL_TRAINING = {"pooling": "text_mean"}

BACKBONE_PRESETS = {
    "vlbeit_tiny": {
        "metadata": {
            "description": "2 layers, d=32, 2 heads, VL-FFN in the top 1; 32 px images with "
            "patch 8 (4x4 grid), text 8, vocabulary 100. For tests.",
            "params": 40_920,
        },
        "config": {
            **_COMMON,
            "vocabulary_size": 100, "num_layers": 2, "num_heads": 2, "hidden_dim": 32,
            "intermediate_dim": 64, "num_vl_layers": 1, "image_size": 32, "patch_size": 8,
            "max_text_length": 8, "relative_text_length": 8,
            **_SMALL_MODEL_TRAINING,
            "initializer_range": 32 ** -0.5,
        },
    },
    "vlbeit_small": {
        "metadata": {
            "description": "4 layers, d=128, 4 heads, VL-FFN in the top 1; 64 px images "
            "(4x4 grid), text 16, vocabulary 1,000. For CPU demos.",
            "params": 1_698_912,
        },
        "config": {
            **_COMMON,
            "vocabulary_size": 1000, "num_layers": 4, "num_heads": 4, "hidden_dim": 128,
            "intermediate_dim": 512, "num_vl_layers": 1, "image_size": 64,
            "max_text_length": 16, "relative_text_length": 16,
            **_SMALL_MODEL_TRAINING,
            "initializer_range": 128 ** -0.5,
        },
    },
    "vlbeit_base": {
        "metadata": {
            "description": "VL-BEiT/VLMo Base: 12 layers, d=768, 12 heads, VL-FFN in the top 2, "
            "224 px, patch 16, text 40 (relative table for 196), vocabulary 30,522.",
            "params": 175_990_368,
        },
        "config": {
            **_COMMON, "num_layers": 12, "num_heads": 12, "hidden_dim": 768,
            "intermediate_dim": 3072, "num_vl_layers": 2,
        },
    },
    "vlbeit_large": {
        "metadata": {
            "description": "VLMo Large shape: 24 layers, d=1024, 16 heads, VL-FFN in the top 3.",
            "params": 562_553_088,
        },
        "config": {
            **_COMMON, "num_layers": 24, "num_heads": 16, "hidden_dim": 1024,
            "intermediate_dim": 4096, "num_vl_layers": 3,
        },
    },
    "vlbeit_base_plus": {
        "metadata": {
            "description": "VLMo Base+ shape: 24 layers, d=544, 16 heads, VL-FFN in the top 3, "
            "absolute positions, no layerscale.",
            "params": 166_863_840,
        },
        "config": {
            **_COMMON, "num_layers": 24, "num_heads": 16, "hidden_dim": 544,
            "intermediate_dim": 2176, "num_vl_layers": 3, "position_mode": "absolute",
            "layerscale_init": None,
        },
    },
}
