"""sejax: speech emotion recognition in JAX/Flax."""

__version__ = "0.1.0"
