"""Built-in fine-tuning tasks, registered through the ``register_heads`` hook."""

from vlbeit_keras.hookspecs import hookimpl


@hookimpl
def register_heads(register):
    from vlbeit_keras.tasks import image_classification
    from vlbeit_keras.tasks import image_text_classification
    from vlbeit_keras.tasks import nlvr
    from vlbeit_keras.tasks import nlvr2
    from vlbeit_keras.tasks import retrieval
    from vlbeit_keras.tasks import vqa

    for module in (vqa, nlvr2, nlvr, retrieval, image_classification, image_text_classification):
        register(module.TASK.name, module.TASK)
