"""The core every other part stands on: pixels → faces → embeddings, weights, model cards, data sets.

It imports nothing from `app`, `training`, `evaluation` or `faceid`; importing this package
itself is free (torch loads only with the modules that need it).
"""
