"""Faces → embeddings: `standardize` (the network's input), `restoration`, the torch and ONNX Runtime
embedders, the int8 copy, and `runtime`, which picks one for the hardware."""
