"""Numbers the whole project agrees on, importable without torch."""

EMBEDDING_DIM = 512  # InceptionResnetV1's bottleneck
CROP_SIZE = 160  # face crops are CROP_SIZE × CROP_SIZE RGB
DETECT_SIDE = 384  # MTCNN runs on a copy at most this large (core.faces.pipeline.PipelineConfig.detect_side)
# Photos are decoded at most this large (core.images.decode_reduced): twice what detection
# uses, so the faces cut from the decoded photo keep more pixels than detection saw.
DECODE_MAX_SIDE = 2 * DETECT_SIDE
