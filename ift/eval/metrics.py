"""Super-NaturalInstructions metrics: exact match and ROUGE-L, max over references, mean x100.

Follows allenai/natural-instructions eval/automatic/evaluation.py (English setting).
"""

from __future__ import annotations

import string

_PUNCT = str.maketrans("", "", string.punctuation)
_scorer = None


def normalize_answer(s: str, lower: bool = True) -> str:
    """Lower-case (unless lower=False), drop ASCII punctuation, collapse whitespace (articles are
    kept, as in SNI)."""
    return " ".join((s.lower() if lower else s).translate(_PUNCT).split())


def _refs(references) -> list[str]:
    refs = [references] if isinstance(references, str) else list(references)
    if not refs:
        raise ValueError("no reference answers to score against")
    return refs


def exact_match(prediction: str, references, lower: bool = True) -> float:
    """1.0 if the normalized prediction equals any normalized reference, else 0.0. lower=False is
    the case-sensitive variant, for tasks where lower-casing makes copying the input correct."""
    pred = normalize_answer(prediction, lower)
    return float(any(pred == normalize_answer(r, lower) for r in _refs(references)))


def _rouge_scorer():
    global _scorer
    if _scorer is None:
        from rouge_score import rouge_scorer

        # Default tokenizer: lower-case, non-alphanumerics -> spaces, Porter stemming of tokens > 3 chars.
        _scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return _scorer


def rouge_l(prediction: str, references) -> float:
    """Max over references of the ROUGE-L F-measure (0..1)."""
    scorer = _rouge_scorer()
    return max(scorer.score(target=r, prediction=prediction)["rougeL"].fmeasure for r in _refs(references))


def score_predictions(predictions: list[str], references_list: list) -> dict:
    """Corpus scores: {"exact_match", "rougeL"} as means x100, "n", and per-example 0..1 lists."""
    if len(predictions) != len(references_list):
        raise ValueError(f"{len(predictions)} predictions but {len(references_list)} reference lists")
    em = [exact_match(p, r) for p, r in zip(predictions, references_list)]
    rl = [rouge_l(p, r) for p, r in zip(predictions, references_list)]
    n = len(predictions)
    return {
        "exact_match": 100.0 * sum(em) / n if n else 0.0,
        "rougeL": 100.0 * sum(rl) / n if n else 0.0,
        "n": n,
        "per_example": {"exact_match": em, "rougeL": rl},
    }
