"""The ``mainspring demo``: a research agent that survives a SIGKILL of its worker.

:mod:`.agent` is the workflow and its activities, :mod:`.driver` runs the story, and
:mod:`.report` checks the side-effect ledger against the histories.
"""
