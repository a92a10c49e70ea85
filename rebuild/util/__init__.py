"""Primitives every layer uses: one subprocess runner, one atomic writer, the progress protocol."""
