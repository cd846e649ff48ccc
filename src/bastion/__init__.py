"""bastion: the security layer for Python web apps.

The package is layered (see DESIGN.md): ``bastion.errors`` < ``bastion.core`` (sans-I/O
decisions) < ``bastion.stores`` < ``bastion.engine`` < ``bastion.asgi`` / ``bastion.wsgi`` <
``bastion.testing`` < ``bastion.cli``. Import what you need from the layer that owns it.
"""

__version__ = "0.1.0.dev0"

__all__ = ["__version__"]
