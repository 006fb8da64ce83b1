"""Shared inputs for the bad-input battery's registries (``tests/_registry_*.py``)."""

import jax
import numpy as np

from _relu_nets import random_relu_net

RNG = np.random.default_rng(0)
KEY = jax.random.key(0)

X = RNG.normal(size=(64, 8)).astype(np.float32)                      # activations [n, d]
XPOS = np.abs(X) + 0.1                                                # non-negative data (NMF)
NET, _, _ = random_relu_net(0, (8, 16, 16, 3), 0.1)                   # a ReLU MLP 8 -> 3
X0, X1 = X[:4], X[4:8]                                                # path ends [paths, 8]
LOGITS = RNG.normal(size=(60, 3)).astype(np.float32)
LABELS = np.repeat(np.arange(3), 20)
ACTS = RNG.normal(size=(1000, 4)).astype(np.float32)                  # unit responses [n, units]
ITEMS = RNG.normal(size=(1000, 6)).astype(np.float32)                 # stimuli [n, ...]

# values passed straight through to the user's function: its business, not ours
PASS_THROUGH = "values are passed to the user's function unchanged; it decides what they mean"
# a model input: the model, not the library, decides which input shapes it accepts
MODEL_DECIDES = "the model decides which input ranks it accepts"

# tiny inputs for the polytope lens and clustering (the battery stays fast)
XS = X[:6]                                                            # a small batch [6, 8]
CLUSTER_LABELS = np.array([0, 0, 1, 1, 2, 2, 0, 1, 2, 0, 1, 2])       # class labels [12]
CLUSTER_IDS = np.array([1, 1, 0, 0, 2, 2, 1, 0, 0, 1, 2, 2])          # cluster ids [12]
PRE_A = RNG.normal(size=(6, 5)).astype(np.float32)                    # pre-activations [batch, units]
PRE_B = RNG.normal(size=(6, 3)).astype(np.float32)
# a width check needs a layout: packed codes carry no record of the network they came from
ANY_WIDTH = "any number of words is a valid packed code: without a layout there is nothing to check the width against"
