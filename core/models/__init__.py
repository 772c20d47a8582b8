"""Model files: the backbone network and its loader, the pretrained cache and its offline
conversion, the model card, and the threshold policy that goes with a model."""
