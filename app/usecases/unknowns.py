"""The unknown-faces log (FACEID_UNKNOWNS): faces /identify could not name, kept for a while,
grouped into clusters (core/clusters.py), and enrolled as a person in one call.

A face is kept when no evidence named it, it is not gone to glare or darkness, and its quality
reaches FACEID_UNKNOWNS_MIN_QUALITY; for FACEID_UNKNOWNS_RETENTION_DAYS. Clusters are made anew
from the log's newest faces each time they are listed; a cluster is known by its first face's id,
which stays its id while the log keeps that face.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from app.config import Settings
from app.errors import UnknownClusterNotFound, UnknownsOff
from app.gallery.gallery import Gallery
from app.gallery.records import NewFace, NewUnknown, Unknown
from app.http.audit import Trail
from app.schemas import EnrollResponse, FaceResult, UnknownCluster, UnknownsPage
from app.usecases.persons import advice_for, public
from core.clusters import cluster
from core.faces.pipeline import Face

MAX_CLUSTERED = 5000  # the newest unknown faces clustered (complete linkage is quadratic in them)
REFERENCES = 5  # faces of a cluster enrolled as references: the best by quality
SHOWN = 4  # face ids listed per cluster, best first


def keep_unknowns(gallery: Gallery, settings: Settings, faces: Sequence[Face], vectors: np.ndarray, results: Sequence[FaceResult],
                  trail: Trail | None) -> int:
    """Keep the faces of this answer that nobody was named for and are worth keeping; how many."""
    key_id = trail.key_id if trail is not None else None
    kept = [NewUnknown(vector, face.png(), face.quality.score, key_id) for face, vector, result in zip(faces, vectors, results)
            if result.match is None and not face.quality.gone and face.quality.score >= settings.unknowns_min_quality]
    gallery.store.add_unknowns(kept)
    return len(kept)


@dataclass(frozen=True)
class Cluster:
    faces: list[Unknown]  # best quality first

    @property
    def id(self) -> int:
        return min(u.id for u in self.faces)


def clusters(gallery: Gallery) -> list[Cluster]:
    """The log's newest faces, clustered; the largest clusters first."""
    log = gallery.store.unknowns(MAX_CLUSTERED)
    labels = cluster(np.stack([u.embedding for u in log])) if log else np.zeros(0, dtype=np.int64)
    groups = [Cluster(sorted((u for u, label in zip(log, labels) if label == c), key=lambda u: -u.quality)) for c in np.unique(labels)]
    return sorted(groups, key=lambda g: (-len(g.faces), g.id))


def list_clusters(gallery: Gallery, settings: Settings, offset: int, limit: int) -> UnknownsPage:
    if not settings.unknowns:
        raise UnknownsOff()
    found = clusters(gallery)
    items = [UnknownCluster(cluster=c.id, count=len(c.faces), first_seen=min(u.at for u in c.faces), last_seen=max(u.at for u in c.faces),
                            faces=[u.id for u in c.faces[:SHOWN]]) for c in found[offset : offset + limit]]
    return UnknownsPage(items=items, total=len(found), offset=offset, limit=limit)


def find(gallery: Gallery, settings: Settings, cluster_id: int) -> Cluster:
    if not settings.unknowns:
        raise UnknownsOff()
    found = next((c for c in clusters(gallery) if c.id == cluster_id), None)
    if found is None:
        raise UnknownClusterNotFound(cluster_id)
    return found


def enrol_cluster(gallery: Gallery, settings: Settings, cluster_id: int, person_id: str, name: str | None, consent: str | None,
                  trail: Trail | None) -> EnrollResponse:
    """Enrol a cluster's best faces as a person; the cluster's faces are marked as theirs."""
    chosen = find(gallery, settings, cluster_id)
    best = chosen.faces[:REFERENCES]
    crops = {u.id: gallery.store.unknown_crop(u.id)[1] for u in best}
    new = [NewFace(f"unknown-{u.id}.png", u.embedding, crops[u.id], None, created_at=None) for u in best]
    if trail is not None:
        trail.persons = [person_id]
    audit = trail.event(detail=f"faces {len(new)} from unknown cluster {cluster_id} of {len(chosen.faces)}") if trail is not None else None
    person, added, created = gallery.enroll(person_id, name, new, consent, audit, [u.id for u in chosen.faces])
    if trail is not None:
        trail.recorded = True
    return EnrollResponse(person=public(person), faces_added=added, created=created, faces=[], advice=advice_for(person),
                          seen_before_as_unknown=sorted(u.at for u in chosen.faces))


def discard_cluster(gallery: Gallery, settings: Settings, cluster_id: int, trail: Trail | None) -> int:
    chosen = find(gallery, settings, cluster_id)
    removed = gallery.store.delete_unknowns([u.id for u in chosen.faces])
    if trail is not None:
        trail.detail = f"unknown faces {removed} of cluster {cluster_id}"
    return removed


def unknown_crop(gallery: Gallery, settings: Settings, unknown_id: int) -> bytes:
    if not settings.unknowns:
        raise UnknownsOff()
    found, png = gallery.store.unknown_crop(unknown_id)
    if not found or png is None:
        raise UnknownClusterNotFound(unknown_id, "unknown face")
    return png


def seen_before(gallery: Gallery, threshold: float, vectors: np.ndarray) -> list[str]:
    """When the log saw faces like these (a person just enrolled) as unknown: times, oldest first."""
    log = gallery.store.unknowns(MAX_CLUSTERED)
    if not log or not len(vectors):
        return []
    sims = np.stack([u.embedding for u in log]) @ np.asarray(vectors, dtype=np.float32).T
    return sorted(u.at for u, best in zip(log, sims.max(axis=1)) if best >= threshold)
