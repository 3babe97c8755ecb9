"""The credential vault: envelope encryption now, platform tokens later."""
