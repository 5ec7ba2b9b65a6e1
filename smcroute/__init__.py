"""smcroute: a static multicast routing daemon for Linux, privilege separated."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("smcroute")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "2.6.0"
