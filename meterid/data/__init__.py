"""Data steps: the demo generator, the image manifest, validation and the adaptive split."""
