"""The lockstep core: everything both twins must compute identically, and nothing else.

Imports only itself (tests/test_layers.py checks it): no rich, matplotlib or zmq. Torch comes
in through `pinned`, which fixes the numeric profile first.
"""
