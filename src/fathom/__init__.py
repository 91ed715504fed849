"""fathom: progressive long-context continual pretraining of open LLMs with LoRA."""

__version__ = "0.1.0"
