"""Pretraining: patch stores, loading and training of CSMoE."""
