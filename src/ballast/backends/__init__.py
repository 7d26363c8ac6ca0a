"""Model backends behind one small interface: generate, score log-probabilities, embed."""
