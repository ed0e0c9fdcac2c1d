"""Watchlists: listed people or reference photos, checked against every newly indexed face; hits, webhooks.

``models`` (what callers see) imports neither SQLAlchemy (``store``) nor httpx (``ops``): the API imports it always.
"""
