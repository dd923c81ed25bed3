"""Experiment, since promoted: the lean HTTP/1.1 transport this file held is now Lifeline's own default
upstream transport, `lifeline.providers.transport.LeanTransport` (bench/RESULTS.md, sections 9 and 11).

Kept as a re-export so that `serve_lean.py` and earlier result files still make sense; with the lean
transport as the default, the "lean transport (experiment)" phase measures the same code as "Lifeline".
"""

from __future__ import annotations

from lifeline.providers.transport import LeanTransport

__all__ = ["LeanTransport"]
