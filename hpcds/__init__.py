"""hpcds: distributed diffusion downscaling for weather and climate."""

__version__ = "0.1.0"
