"""Pixels → faces → embeddings: the one face pipeline shared by training, evaluation and serving."""
