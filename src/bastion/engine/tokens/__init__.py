"""Token store work: refresh families, the deny-list and epoch check, one-time tokens, DPoP."""
