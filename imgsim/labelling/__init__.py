"""The labelling assistant: labels for every image from a few of a person's, and what to label next.

- graph: each image's K nearest others, kept per version (`neighbour_graph`);
- propagation: label spreading over it, every image's label and confidence (`propagate`);
- suggestions: what to label next (`suggest`); review: likely mistakes and outliers (`review`);
- paths: rows of a version from paths as a person types them (`rows_for_paths`);
- export: a labelled collection as folders, CSV or JSON lines.

Nothing here imports TensorFlow: the latents are read from the version's engine.
"""

from imgsim.labelling.graph import Graph, K, neighbour_graph
from imgsim.labelling.paths import rows_for_paths
from imgsim.labelling.propagation import Propagation, propagate, state_key
from imgsim.labelling.review import Finding, review
from imgsim.labelling.suggestions import Suggestion, suggest

__all__ = ["K", "Finding", "Graph", "Propagation", "Suggestion", "neighbour_graph", "propagate", "review",
           "rows_for_paths", "state_key", "suggest"]
