"""Token store work: refresh-token families and, alongside, the other token managers.

Each manager lives in its own module (``bastion.engine.tokens.refresh`` and so on); import it
from there. The package itself exports nothing.
"""
