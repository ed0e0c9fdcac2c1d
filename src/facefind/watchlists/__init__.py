"""Watchlists: listed people or reference photos, checked against every newly indexed face; hits, webhooks."""

from facefind.watchlists.models import WatchHit, WatchHitPage, WatchlistInfo
from facefind.watchlists.ops import SIGNATURE_HEADER, WebhookDeliverer, check_new_faces, signature
from facefind.watchlists.store import HIT_STATES, WatchStore

__all__ = ["HIT_STATES", "SIGNATURE_HEADER", "WatchHit", "WatchHitPage", "WatchStore", "WatchlistInfo",
           "WebhookDeliverer", "check_new_faces", "signature"]
