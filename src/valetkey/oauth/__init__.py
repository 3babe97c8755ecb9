"""The OAuth 2.0 authorization server core: grants, client authentication, tokens, keys."""
