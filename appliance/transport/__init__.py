"""Transports that carry realtime events to the service (the websockets client)."""
