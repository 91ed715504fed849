"""Evaluation: needles and perplexity by position (runner), RULER, generation on a long document;
``command`` is what ``fathom eval`` runs."""
