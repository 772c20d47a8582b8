"""Numbers the whole project agrees on, importable without torch."""

EMBEDDING_DIM = 512  # InceptionResnetV1's bottleneck
CROP_SIZE = 160  # face crops are CROP_SIZE × CROP_SIZE RGB
