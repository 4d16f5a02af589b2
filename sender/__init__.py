"""Alice, on Earth: reads the text, predicts it, codes it, sends the bits."""
