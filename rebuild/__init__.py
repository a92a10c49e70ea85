"""tfrebuild: upgrade TensorFlow environments without breaking them."""

__version__ = "0.1.0"

#: tfrebuild's own distribution: never requested, never carried into a new env (one home, below every layer).
SELF = ("tfrebuild",)
