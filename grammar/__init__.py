"""Data-only package holding the lark grammar (smcroute.lark) and the LALR tables
lark builds from it (tables.py, written by tools/lark_tables.py); no code lives here.

It exists so that `importlib.resources.files("smcroute.grammar")` works in
editable installs too (setuptools' editable finder cannot resolve a namespace
sub-package mapped to another directory).
"""
