"""Evaluation: feature stores, linear and segmentation probes, retrieval, results tables."""
