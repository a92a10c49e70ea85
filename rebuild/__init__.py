"""tfrebuild: upgrade TensorFlow environments without breaking them."""

__version__ = "0.1.0"
