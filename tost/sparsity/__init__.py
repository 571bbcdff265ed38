"""Masks, how they are chosen (methods), and how the chosen fraction is spread over rounds."""
