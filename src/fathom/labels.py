"""The label convention that packing (``fathom.data``) and the loss (``fathom.model``) share."""

IGNORE_INDEX = -100  # a label that is not predicted: torch's cross_entropy default ignore_index
