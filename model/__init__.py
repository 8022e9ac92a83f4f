"""LIRDRec and ID-only baselines: data, graphs, models, training, evaluation and search (torch/numpy/scipy/faiss only)."""

import os

# torch backs its CPU buffers of 2 MB or more with transparent huge pages when this is set (read
# once, at torch's first allocation: it must be set before torch loads; pipeline/__init__.py sets
# it too). A fresh 1.15 GB buffer (10^6-item rows) is then faulted in 2 MB pages instead of 4 KB
# ones: on a 2-core AMD EPYC whose kernel's THP mode is "madvise", an elementwise op into a fresh
# (1.5e6 x 192) buffer took 0.08 s instead of 0.21 s (0.06 s into an existing one), and a
# 200,000-item step 3.9 s instead of 4.9 s (two processes one after the other, another job sharing
# the CPU); where the mode is "always" or "never" it changes nothing. Set it to 0 to opt out.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
