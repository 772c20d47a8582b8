"""Pixels → faces: MTCNN and the box regressor find them (`pipeline`), `subject` says which face a
photo is of, `crop` cuts what the network sees, `quality` says why a face may not be recognised."""
