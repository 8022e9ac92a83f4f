"""LIRDRec and ID-only baselines: data, graphs, models, training, evaluation and search (torch/numpy/scipy/faiss only)."""
