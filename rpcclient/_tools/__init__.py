"""The ``rpcclient`` command line and what only it uses.

``cli`` (the parser, one subcommand per tool, ``serve``), ``stats``
(``rpcclient stats FILE``) and ``ab/`` (``rpcclient ab``: the A/B
comparison, its load loops, statistics and plots). Nothing under
``rpcclient/`` outside this folder imports it.
"""
