"""smcroute: a static multicast routing daemon for Linux, privilege separated."""

# The single source of the version (pyproject reads it).  A constant, not an
# importlib.metadata lookup: the privileged helper imports this package and
# must stay tiny.
__version__ = "2.6.0"
