"""The embedded demo corpus as a data source named ``"demo"``."""

from vlbeit_keras.hookspecs import hookimpl


def read_demo(task="captions", num_examples=256, seed=0, image_size=64, split=None):
    """Records of the synthetic demo corpus (no files); see
    :func:`vlbeit_keras.data.demo_corpus.demo_records` for the tasks and fields."""
    from vlbeit_keras.data.demo_corpus import demo_records

    return demo_records(task=task, num_examples=num_examples, seed=seed,
                        image_size=image_size, split=split)


@hookimpl
def register_datasets(register):
    register("demo", read_demo)
