"""CodeSearchNet readers, the offline miner that rebuilds a CodeSearchNet-style corpus, and docstring helpers."""
