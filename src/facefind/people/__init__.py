"""People: faces grouped into persons with calibrated links, manual decisions that survive re-runs, co-appearance.

``store`` keeps who is who (SQLAlchemy Core, its own database), ``cluster`` groups plain arrays of
embeddings under the photo / frame / track constraints, ``ops`` runs both over a library. ``location``
says where a library keeps them without importing SQLAlchemy: a search asks it on every call.
"""
