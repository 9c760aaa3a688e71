"""Cluster negatives into candidate new error modes, with ids that survive from one run to the next.

Each group (the `other` negatives, and separately each mode) is embedded with TF-IDF over the
user's comments and the start of the response, reduced with truncated SVD and clustered with
MiniBatchKMeans; k is chosen from the data by the silhouette score (k = 1 when no split scores at
least `MIN_SILHOUETTE`). A cluster is described by its size, top terms, three exemplars closest to
its centroid, and its centroid as term weights, which do not depend on this run's vocabulary.

Stable ids: the new clusters of a group are matched one-to-one to the previous day's clusters of
the same group by the cosine similarity of their term weights (Hungarian assignment); a match of at
least `MATCH_MIN_SIMILARITY` keeps the old id, anything else gets the next new id of that group.
A cluster without terms matches the previous cluster without terms of its group.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import MiniBatchKMeans
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import normalize
from threadpoolctl import threadpool_limits

from feedback_loop.lib.datasets.privacy import scrub_frame
from feedback_loop.lib.days import days_ending
from feedback_loop.lib.parallel import in_processes

MIN_GROUP_SIZE = 10
MAX_K = 8
MIN_SILHOUETTE = 0.1
MATCH_MIN_SIMILARITY = 0.5
CENTROID_TERMS = 40
TEXT_CHARS = 400
FIT_SAMPLE = 10_000  # rows k-means is fitted on per k (a larger group is assigned to the fitted centroids)
PARALLEL_MIN_ROWS = 5_000  # negatives from which the groups are fitted on a process per core


@dataclass
class ClusterResult:
    assignments: pd.DataFrame  # trace_id, mode, cluster_id, partition_date
    clusters: pd.DataFrame  # one row per cluster of this run
    registry: dict  # the updated registry to persist


def cluster_text(frame: pd.DataFrame) -> pd.Series:
    """The comments and the start of the response, scrubbed before they are cut: their words become
    the clusters' terms and exemplars, which are shown and kept in the registry."""
    scrubbed, _ = scrub_frame(frame[["comments", "output"]].astype("string"), ["comments", "output"])
    return scrubbed["comments"].fillna("") + " \n " + scrubbed["output"].fillna("").str.slice(0, TEXT_CHARS)


def cluster_negatives(frame: pd.DataFrame, registry: dict, seed: int = 0, today: str | None = None) -> ClusterResult:
    """Cluster `frame` (trace_id, partition_date, mode, comments, output) per mode; match ids against `registry`."""
    today = today or dt.date.today().isoformat()
    registry = {"clusters": dict(registry.get("clusters", {})), "counters": dict(registry.get("counters", {}))}
    assignments, rows = [], []
    text = cluster_text(frame)
    groups = [(mode, members) for mode, members in frame.groupby("mode", sort=True) if len(members) >= MIN_GROUP_SIZE]
    for (mode, members), (labels, summaries) in zip(groups, _clustered(groups, text, seed), strict=True):
        ids = _match_ids(mode, summaries, registry)
        for local, summary in enumerate(summaries):
            cluster_id = ids[local]
            previous = registry["clusters"].get(cluster_id, {})
            record = {
                "cluster_id": cluster_id,
                "mode": mode,
                "size": summary["size"],
                "top_terms": ", ".join(summary["top_terms"]),
                "exemplars": summary["exemplars"],
                "first_seen": previous.get("first_seen", today),
                "last_seen": today,
                "status": "tracked" if previous else "new",
            }
            registry["clusters"][cluster_id] = {k: v for k, v in record.items() if k != "status"} | {"terms": summary["terms"]}
            rows.append(record)
        assignments.append(members[["trace_id", "partition_date"]].assign(mode=mode, cluster_id=[ids[i] for i in labels]))
    clusters = pd.DataFrame(rows, columns=["cluster_id", "mode", "size", "top_terms", "exemplars", "first_seen", "last_seen", "status"])
    columns = ["trace_id", "mode", "cluster_id", "partition_date"]
    assigned = pd.concat(assignments, ignore_index=True)[columns] if assignments else pd.DataFrame(columns=columns)
    return ClusterResult(assignments=assigned.astype("string"), clusters=clusters, registry=registry)


def cluster_negatives_by_day(frame: pd.DataFrame, days: list[str], span: int, registry: dict, seed: int = 0) -> tuple[pd.DataFrame, dict[str, ClusterResult]]:
    """The cluster of each negative of `days`: a day's negatives are clustered with those of the
    `span` trace days before it (`frame` holds them, by `partition_date`), and matched against the
    registry as the day before left it. Returns the assignments of `days` and each day's result
    (whose registry is that day's snapshot)."""
    day_of = frame["partition_date"].astype("string")
    frame = scrub_frame(frame.astype({"comments": "string", "output": "string"}), ["comments", "output"])[0]  # once, not per window
    assignments, results = [], {}
    for day in days:
        result = cluster_negatives(frame[day_of.isin(days_ending(day, span)).to_numpy(dtype=bool)], registry, seed=seed, today=day)
        assignments.append(result.assignments[result.assignments["partition_date"] == day])
        results[day], registry = result, result.registry
    return pd.concat(assignments, ignore_index=True), results


def _clustered(groups: list[tuple[str, pd.DataFrame]], text: pd.Series, seed: int) -> list[tuple[np.ndarray, list[dict]]]:
    """`_cluster_group` of each group. The groups are independent: with `PARALLEL_MIN_ROWS` rows or
    more they are fitted on a process per core, largest first (pure-Python tokenizing dominates)."""
    tasks = [(text[members.index], members["trace_id"], seed) for _, members in groups]
    largest_first = sorted(range(len(tasks)), key=lambda i: -len(tasks[i][0]))
    parallel = sum(len(members) for _, members in groups) >= PARALLEL_MIN_ROWS
    done = in_processes(_cluster_task, [tasks[i] for i in largest_first], 2 if parallel else len(tasks) + 1)
    by_task = dict(zip(largest_first, done, strict=True))
    return [by_task[i] for i in range(len(tasks))]


def _cluster_task(task: tuple[pd.Series, pd.Series, int]) -> tuple[np.ndarray, list[dict]]:
    # One OpenMP and BLAS thread: a process per core already uses the cores, and a forked process
    # must not enter OpenMP's thread pool if its parent had one running.
    with threadpool_limits(limits=1):
        return _cluster_group(*task)


def _cluster_group(text: pd.Series, trace_ids: pd.Series, seed: int) -> tuple[np.ndarray, list[dict]]:
    vectorizer = TfidfVectorizer(max_features=5000, stop_words="english", min_df=2, sublinear_tf=True, token_pattern=r"(?u)\b[^\W\d_]{2,}\b")
    try:
        tfidf = vectorizer.fit_transform(text.tolist())
    except ValueError:  # no term occurs twice: one cluster
        tfidf = None
    if tfidf is None or tfidf.shape[1] < 2:
        labels = np.zeros(len(text), dtype=int)
        terms = np.array(vectorizer.get_feature_names_out()) if tfidf is not None else np.array([])
        return labels, [_summary(tfidf, terms, labels, 0, text, trace_ids, None)]
    components = min(50, tfidf.shape[1] - 1, len(text) - 1)
    embedded = normalize(TruncatedSVD(n_components=components, random_state=seed).fit_transform(tfidf))
    labels, centroids = _best_k(embedded, seed)
    # k-means may leave a centroid without members (identical rows): number the clusters that have some.
    present, labels = np.unique(labels, return_inverse=True)
    centroids = centroids[present]
    terms = np.array(vectorizer.get_feature_names_out())
    return labels, [_summary(tfidf, terms, labels, k, text, trace_ids, (embedded, centroids[k])) for k in range(labels.max() + 1)]


def _best_k(embedded: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and centroids of the k with the best silhouette. Each k is fitted on at most
    `FIT_SAMPLE` rows (a seeded sample); every row then goes to its nearest centroid of the best."""
    sample = embedded
    if len(embedded) > FIT_SAMPLE:
        sample = embedded[np.sort(np.random.default_rng(seed).choice(len(embedded), FIT_SAMPLE, replace=False))]
    best = (MIN_SILHOUETTE, None, embedded.mean(axis=0, keepdims=True))
    # One thread: each mini-batch step is small, and waking OpenMP threads for it costs ~6x the step.
    with threadpool_limits(limits=1):
        for k in range(2, min(MAX_K, len(sample) // 5) + 1):
            model = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=2048).fit(sample)
            if len(set(model.labels_)) < 2:
                continue
            score = silhouette_score(sample, model.labels_, sample_size=min(2000, len(sample)), random_state=seed)
            if score > best[0]:
                best = (score, model, model.cluster_centers_)
    model = best[1]
    labels = np.zeros(len(embedded), dtype=int) if model is None else (model.labels_ if sample is embedded else model.predict(embedded))
    return labels, best[2]


def _summary(tfidf, terms: np.ndarray, labels: np.ndarray, k: int, text: pd.Series, trace_ids: pd.Series, geometry) -> dict:
    members = np.flatnonzero(labels == k)
    weights = np.asarray(tfidf[members].mean(axis=0)).ravel() if tfidf is not None and len(terms) else np.zeros(0)
    top = np.argsort(-weights, kind="stable")[:CENTROID_TERMS]
    term_weights = {str(terms[i]): round(float(weights[i]), 5) for i in top if weights[i] > 0}
    if geometry is not None:
        embedded, centroid = geometry
        order = members[np.argsort(-(embedded[members] @ centroid), kind="stable")]
    else:
        order = members
    exemplars = [f"{trace_ids.iloc[i]}: {text.iloc[i].strip()[:120]}" for i in order[:3]]
    return {"size": int(len(members)), "top_terms": list(term_weights)[:8], "terms": term_weights, "exemplars": exemplars}


def _match_ids(mode: str, summaries: list[dict], registry: dict) -> list[str]:
    previous = {cid: c for cid, c in registry["clusters"].items() if c["mode"] == mode}
    ids: list[str | None] = [None] * len(summaries)
    if previous:
        old_ids = sorted(previous)
        similarity = np.array([[_cosine(s["terms"], previous[o]["terms"]) for o in old_ids] for s in summaries])
        rows, cols = linear_sum_assignment(-similarity)
        for r, c in zip(rows, cols, strict=True):
            if similarity[r, c] >= MATCH_MIN_SIMILARITY:
                ids[r] = old_ids[c]
    for i in range(len(summaries)):
        if ids[i] is None:
            registry["counters"][mode] = registry["counters"].get(mode, 0) + 1
            ids[i] = f"{mode}-{registry['counters'][mode]:03d}"
    return ids  # type: ignore[return-value]


def _cosine(a: dict[str, float], b: dict[str, float]) -> float:
    if not a and not b:  # two clusters without terms (no word occurs twice): the same cluster
        return 1.0
    dot = sum(w * b.get(t, 0.0) for t, w in a.items())
    norm = math.sqrt(sum(w * w for w in a.values())) * math.sqrt(sum(w * w for w in b.values()))
    return dot / norm if norm else 0.0
