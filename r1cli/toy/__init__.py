"""The toy world: its corpora, its tokenizer and model configs, and the toy judge."""
