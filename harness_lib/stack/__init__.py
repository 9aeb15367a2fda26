"""Stack checks: prove the user's own dashboard and engine show what the broker did.

``spec`` validates the ``[[stack]]`` declaration, ``watch`` reads each endpoint (SSE,
WebSocket, HTTP polling, a page in headless chromium), ``checks`` judges what they showed
against the broker-side moments the harness observed, and ``monitor`` runs it all during
a run and produces the ``stack`` phase. Importing this package loads no HTTP, JMESPath or
browser library; those load only when a stack is declared.
"""

from harness_lib.stack.spec import Endpoint, StackSpecError, parse_stack

__all__ = ["Endpoint", "StackSpecError", "parse_stack"]
