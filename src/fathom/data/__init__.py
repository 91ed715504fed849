"""Data: read documents, tokenize them, pack them into rows of one phase's length, serve the rows."""
