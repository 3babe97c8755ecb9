"""Intent checks: the policy decision point, its Cedar policies, limits and approvals."""
