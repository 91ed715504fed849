"""What the commands show: one module per report, each computing one JSON-ready object and turning it
into text or HTML, so the CLI only parses (:mod:`fathom.cli`) and every report is tested without it.

==========  ========================================================================  ===============
module      the report                                                                command
==========  ========================================================================  ===============
plan        phases, rows, steps, RoPE, length mix, simulated step, memory and time    fathom plan
corpus      the token cache, one file as it enters it, what the cache holds           prepare, data
qa          document-QA records from the corpus, and what was built                   fathom qa build
runs        where a run is, from its status.json                                      fathom runs
html        one self-contained page of a run and its evaluations                      fathom report
==========  ========================================================================  ===============
"""

from __future__ import annotations


def table_console():
    """A rich console for the text reports: the terminal's width, or 160 columns when piped or logged so the
    tables are not squeezed into 80."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=160)
