"""The ``shiftwatch`` command line (:mod:`stream.cli.main`)."""
