"""Two-phase training on cached backbone activations, calibration and open-set scores."""
