"""The embedding classifier's arithmetic (routing.policies.injection_knn), on hand-made vectors: the K
nearest examples vote with their similarity, texts are read in bounded pieces cut at spaces."""

from __future__ import annotations

import pytest

from routing.policies import injection_knn as knn


def _classifier(attacks: list[list[float]], benign: list[list[float]], monkeypatch) -> knn.Classifier:
    monkeypatch.setattr(
        knn, "EXAMPLES", tuple(f"a{i}" for i in range(len(attacks))) + tuple(f"b{i}" for i in range(len(benign)))
    )
    monkeypatch.setattr(knn, "ATTACKS", tuple(f"a{i}" for i in range(len(attacks))))
    return knn.build(attacks + benign)


def test_the_nearest_examples_vote_with_their_similarity(monkeypatch):
    monkeypatch.setattr(knn, "K", 3)
    clf = _classifier([[1, 0, 0], [0.9, 0.1, 0]], [[0, 1, 0], [0, 0, 1]], monkeypatch)
    assert clf.score([1, 0, 0]) == pytest.approx(1.0)  # the two nearest are attacks, the third is orthogonal
    assert clf.score([0, 1, 0]) < 0.15  # nearest is benign; the second (an attack) barely counts
    assert clf.score([0, 0, -1]) == 0.0  # nothing similar at all: no vote
    mixed = clf.score([1, 1, 0])
    assert 0.4 < mixed < 0.7
    with pytest.raises(ValueError, match="size changed"):
        clf.score([1, 0])


def test_build_refuses_what_is_not_one_embedding_per_example():
    with pytest.raises(ValueError, match="expected"):
        knn.build([[1.0, 0.0]])
    vectors = [[1.0, 0.0]] * (len(knn.EXAMPLES) - 1) + [[1.0]]
    with pytest.raises(ValueError, match="differ in size"):
        knn.build(vectors)


def test_texts_are_read_in_bounded_pieces_cut_at_spaces():
    text = ("word " * 400).strip()  # 1,999 characters
    pieces = knn.pieces([text, "short one", "   "])
    assert all(len(p) <= knn.PIECE for p in pieces) and pieces[-1] == "short one"
    assert "".join(pieces[:-1]).replace(" ", "") == text.replace(" ", "")  # nothing lost at the cuts
    assert len(knn.pieces(["x " * 100_000])) == knn.MAX_PIECES
