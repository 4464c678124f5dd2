"""Where client work runs: local processes (:mod:`fedsilo.runners.local`); Ray later."""
