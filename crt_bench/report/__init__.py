"""Tables and figures derived from the results store."""
