"""Getting a trained model to where it is used: the Hub with a model card (``push``), serving engines
(``serve-args``) and GGUF (``export``), each carrying the RoPE setting the model was trained with."""
