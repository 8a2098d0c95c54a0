"""The ``mf2`` command line: thin click commands over the ``mf2`` library."""
