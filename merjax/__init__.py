"""merjax: facial micro-expression recognition in JAX/Flax.

The library holds pure functions and Flax modules; experiment logic lives in
``experiments/`` and dataset builders in ``datasets/`` (repository root).
"""

__version__ = "0.1.0"
