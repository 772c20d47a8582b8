"""Data sets on disk: the three layouts (`dataset`), the identity splits (`splits/`), and the
cached face crops of many images (`crop_cache`). No torch at import of `dataset`."""
