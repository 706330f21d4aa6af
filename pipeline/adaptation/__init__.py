"""Self-supervised adaptation to a target corpus: pseudo-queries cut from its own passages, never its queries or qrels."""
