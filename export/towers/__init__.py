"""The kinds of tower a family is built from; each knows its graph's inputs, its validation feeds, its
TensorRT shapes and the Triton models that serve it (`base.Tower`)."""
