"""Vertical federation: what sessions over the same people in different silos share.

:mod:`fedsilo.vfl.alignment` -- the alignment a private record linkage (``prl``) session
stores, read by the sessions that use it.
"""
