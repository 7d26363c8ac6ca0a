"""The score stage: Instruction-Following Difficulty and perplexity from the weak model, and the optional judge."""
