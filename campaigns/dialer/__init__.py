"""Outbound call lists: calling hours, the dialer (preview and progressive), dial backends."""
