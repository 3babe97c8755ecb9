"""The audit log: append-only, hash-chained per tenant, durable before a response is sent."""
