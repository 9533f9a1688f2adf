"""The downscaler network F_θ and its graphs (parallelize.py will shard it from outside)."""

from hpcds.models.downscaler import DownscalerNet
from hpcds.models.graphs import ModelGraphs, build_model_graphs, transpose_graph

__all__ = ["DownscalerNet", "ModelGraphs", "build_model_graphs", "transpose_graph"]
