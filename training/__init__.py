"""Offline fine-tuning of the FaceNet backbone: ArcFace stage, contrastive stage, export."""
