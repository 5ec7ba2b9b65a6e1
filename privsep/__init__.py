"""Privilege separation: the tiny privileged helper, the protocol it speaks, and the
daemon's side of it."""
