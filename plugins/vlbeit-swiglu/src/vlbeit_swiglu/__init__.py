"""vlbeit-swiglu: a SwiGLU feed-forward expert kind for vlbeit_keras's MoME blocks."""

__version__ = "0.1.0"

from vlbeit_swiglu.swiglu_expert import SwiGLUExpert
from vlbeit_swiglu.swiglu_expert import swiglu_hidden_dim

__all__ = ["SwiGLUExpert", "swiglu_hidden_dim"]
