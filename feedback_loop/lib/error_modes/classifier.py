"""A classifier, refit every run, that labels the negatives no rule could explain.

Trained on the negatives the rules labelled (reason tags, comments, edits, response checks), on
hashed word uni- and bi-grams of the reason tags, comment, prompt and the start of the response:
hashing needs no vocabulary fit, so training and prediction stay linear and fast. At most
`MAX_TRAINING_ROWS` rule-labelled rows are used (a stratified sample); 20 % of them are held out,
the model is fit once on the rest, and its hold-out scores go into the asset's metadata.
Deterministic for a fixed seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split

from feedback_loop.lib.parallel import in_processes

OUTPUT_CHARS = 500
MIN_TRAINING_ROWS = 20
MAX_TRAINING_ROWS = 20_000
HASH_SLICE = 5_000  # texts per worker task when hashing n-grams


@dataclass
class Validation:
    trained: bool
    train_rows: int = 0
    test_rows: int = 0
    macro_f1: float | None = None
    accuracy: float | None = None
    classes: list[str] = field(default_factory=list)


def classifier_text(frame: pd.DataFrame) -> pd.Series:
    parts = [frame[c].astype("string").fillna("") for c in ("reason_tags", "comments", "prompt")]
    parts.append(frame["output"].astype("string").fillna("").str.slice(0, OUTPUT_CHARS))
    text = parts[0]
    for part in parts[1:]:
        text = text + " \n " + part
    return text


def fit_and_predict(train_text: pd.Series, train_labels: pd.Series, predict_text: pd.Series, seed: int) -> tuple[pd.Series, np.ndarray, Validation]:
    """Fit on the rule-labelled rows, predict the others: (predicted mode, probability, validation)."""
    empty = pd.Series(pd.NA, index=predict_text.index, dtype="string")
    counts = train_labels.value_counts()
    if len(train_labels) < MIN_TRAINING_ROWS or len(counts) < 2:
        return empty, np.zeros(len(predict_text)), Validation(trained=False, train_rows=len(train_labels))
    if len(train_labels) > MAX_TRAINING_ROWS:
        sample = train_labels.groupby(train_labels, group_keys=False).apply(lambda g: g.sample(n=max(1, round(len(g) * MAX_TRAINING_ROWS / len(train_labels))), random_state=seed))
        train_text, train_labels = train_text[sample.index], train_labels[sample.index]
        counts = train_labels.value_counts()
    vectorizer = HashingVectorizer(n_features=2**18, ngram_range=(1, 2), alternate_sign=False, norm="l2")
    x = _hashed(vectorizer, train_text.tolist())
    y = train_labels.to_numpy(dtype=str)
    validation = Validation(trained=True, train_rows=len(y), classes=sorted(counts.index))
    stratify = y if counts.min() >= 2 else None
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=seed, stratify=stratify)
    model = _model(seed).fit(x_train, y_train)
    held_out = model.predict(x_test)
    validation.test_rows = len(y_test)
    validation.macro_f1 = round(float(f1_score(y_test, held_out, average="macro")), 4)
    validation.accuracy = round(float(accuracy_score(y_test, held_out)), 4)
    if not len(predict_text):
        return empty, np.zeros(0), validation
    proba = model.predict_proba(_hashed(vectorizer, predict_text.tolist()))
    best = proba.argmax(axis=1)
    return pd.Series(model.classes_[best], index=predict_text.index, dtype="string"), proba.max(axis=1), validation


def _hashed(vectorizer: HashingVectorizer, texts: list[str]) -> sparse.csr_matrix:
    """`vectorizer.transform(texts)`, in slices on a process per core (sklearn's analyzer is pure Python;
    the vectorizer is stateless, so the rows are the same)."""
    if len(texts) <= HASH_SLICE:
        return vectorizer.transform(texts)
    slices = [texts[start : start + HASH_SLICE] for start in range(0, len(texts), HASH_SLICE)]
    return sparse.vstack(in_processes(vectorizer.transform, slices), format="csr")


def _model(seed: int) -> SGDClassifier:
    return SGDClassifier(loss="log_loss", alpha=1e-5, max_iter=15, tol=None, random_state=seed, class_weight="balanced")
