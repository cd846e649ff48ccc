"""Authorization behind the front door: the policy slice, the authorizer, the guide API."""
