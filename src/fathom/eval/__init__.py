"""Evaluation: generation on a long document (more to come: needle heatmaps, perplexity by position)."""
