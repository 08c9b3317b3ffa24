"""Evaluation: metrics, confusion matrix, the image-wise audit, open-set scores."""
