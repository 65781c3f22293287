"""rad3d engine: CT input, preprocessing, models, generation, inference and the embedding cache.

The engine knows nothing of training recipes, studies or user interfaces.
"""
