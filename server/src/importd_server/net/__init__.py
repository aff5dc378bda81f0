"""Outbound connections made on a caller's behalf, and the guard that vets them."""
