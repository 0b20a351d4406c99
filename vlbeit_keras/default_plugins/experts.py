"""Built-in expert kinds."""

from vlbeit_keras.hookspecs import hookimpl


@hookimpl
def register_experts(register):
    from vlbeit_keras.layers.feed_forward_expert import FeedForwardExpert

    register("ffn", FeedForwardExpert)
