"""Privilege separation: the tiny root-privileged child and the protocol it speaks."""
