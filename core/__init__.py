"""The core every other part stands on, named after the flow: pixels (`images`, `pixels`) →
`faces` → `embedding`, with `models` (weights, cards, thresholds) and `data` (data sets) beside.

It imports nothing from `app`, `training`, `evaluation` or `faceid`; importing this package
itself is free (torch loads only with the modules that need it).
"""
