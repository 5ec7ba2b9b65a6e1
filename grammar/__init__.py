"""Data-only package holding the lark grammar (smcroute.lark); no code lives here.

It exists so that `importlib.resources.files("smcroute.grammar")` works in
editable installs too (setuptools' editable finder cannot resolve a namespace
sub-package mapped to another directory).
"""
