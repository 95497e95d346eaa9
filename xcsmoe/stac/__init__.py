"""stac"""
