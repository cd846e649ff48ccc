"""Authorization, sans-I/O: the model, the policy and the route table."""
