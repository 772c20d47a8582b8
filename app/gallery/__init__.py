"""The gallery: a durable SQLite store (source of truth) and a FAISS index rebuilt from it."""
