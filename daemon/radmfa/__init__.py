"""radmfa: a RADIUS server that checks a directory password and a second factor."""

__version__ = "0.1.0"
