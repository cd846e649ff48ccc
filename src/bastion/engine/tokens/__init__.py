"""Token state in the stores: refresh-token families, the deny-list, one-time tokens, DPoP
proof replay. The sans-I/O decisions live in :mod:`bastion.core.tokens`."""
