"""newsdesk: raw news articles in, bilingual (English + Simplified Chinese) analysis out.

The stages, one package or module each: ``ingest`` -> ``prompts`` -> ``model`` -> ``validate``
-> ``emit``, with ``analyze`` (one article), ``runner`` (a batch) and ``cli`` on top.
"""

__version__ = "0.1.0"
