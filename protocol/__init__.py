"""Marslink protocol: the wire format (frames.py) and the ZeroMQ transport (link.py).

Both are engine-agnostic: payloads are opaque bytes here. See protocol/README.md.
"""
