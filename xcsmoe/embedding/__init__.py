"""Embeddings of S1/S2 cubes: plan windows, run the encoder blockwise, write and export."""
