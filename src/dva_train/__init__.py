"""The DVA training program (the library is :mod:`dva`; this package trains it)."""
