"""The built-in model packages, one folder each (registered in
:data:`fedsilo.federation.package.REGISTRY`). No package imports another package."""
