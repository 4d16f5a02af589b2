"""Coding: the arithmetic coder, the file container and file mode (compress/decompress).
Built on the core; knows nothing of links, command lines or displays."""
