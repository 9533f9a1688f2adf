"""Evaluation diagnostics of downscaled ensembles: power spectra and extremes."""
