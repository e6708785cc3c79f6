import os

# Internal errors raise in tests instead of turning into notes (see relulint.engine.debug).
os.environ.setdefault("RELULINT_DEBUG", "1")
