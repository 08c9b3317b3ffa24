"""The classifier: backbones (ResNet-18, EfficientNet-Lite0), presets and the head."""
