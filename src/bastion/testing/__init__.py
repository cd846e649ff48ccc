"""Test support shipped with bastion: the store contract suite and service fixtures."""
