"""The gallery: a durable store (SQLite or PostgreSQL, the source of truth) and the FAISS
indexes over it, kept in step (gallery.py composes the parts; store.py opens a store)."""
