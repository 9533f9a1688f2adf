"""Capacity planning: per-rank GPU memory and communication of a config on N GPUs
(`memory.py`), with activations counted on the real model on the meta device
(`activations.py`). CLI: `hpcds plan CONFIG --gpus N`."""
