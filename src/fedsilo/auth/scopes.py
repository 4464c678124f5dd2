"""``from fedsilo.auth.scopes import Scope``, as the seed imports it (defined in
:mod:`fedsilo.scopes`)."""

from fedsilo.scopes import Scope

__all__ = ["Scope"]
