"""The one base of every error olla_jax raises on purpose.

``except olla_jax.OllaJaxError`` catches them all.  Each error also keeps the
builtin base it always had (ValueError, RuntimeError, ImportError), so code
that catches those keeps working.  This module imports nothing: every stage,
the solver included, may use it.
"""


class OllaJaxError(Exception):
    """An error olla_jax raised on purpose, with a message that says what to do."""
