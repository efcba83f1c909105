"""Tiny random models built in the tests: a 2-layer Llama with a small BPE tokenizer and a ChatML
chat template, saved as a normal transformers folder in a few seconds."""

from __future__ import annotations

from pathlib import Path

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = [
    "The cat sleeps on the warm windowsill while the dog chases a ball in the park.",
    "What is the capital of France? The capital of France is Paris.",
    "Preheat the oven to 180 degrees, whisk the eggs and sugar, then bake the cake.",
    "Python lists can be built with a comprehension; a for loop iterates over a sequence.",
    "The stock market fell sharply on Monday as investors sold shares and bond yields climbed.",
    "Write a haiku about autumn leaves falling softly on the quiet river at dusk.",
] * 20


def build_tokenizer(vocab_size: int = 400):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|im_end|>", unk_token="<|endoftext|>")
    fast.chat_template = CHATML
    return fast


def build_tiny_model(folder: str | Path, seed: int = 0, hidden: int = 64, layers: int = 2,
                     context: int = 512) -> Path:
    """A 2-layer Llama with random weights (seeded) and its tokenizer, saved to `folder` (`context`:
    max_position_embeddings; rotary positions, so a longer context adds no weights)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=context, tie_word_embeddings=False,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config)
    # Sharpen the output distribution (logit std ~8) so greedy decoding is robust to float noise.
    with torch.no_grad():
        model.lm_head.weight.mul_(50.0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def perturb_weights(folder: str | Path, scale: float = 0.05, seed: int = 1) -> None:
    """'Retrain' a saved model: add seeded noise to its weights and save it again in place."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * scale)
    model.save_pretrained(folder)


def raise_token(folder: str | Path, token: str, amount: float = 30.0) -> int:
    """A 'finetune' with a known answer: raise one token's logit at (almost) every position.

    The lm_head has no bias, so the token's output row gets `amount` along the mean direction of
    the final (normed) hidden states over the test corpus: its logit rises wherever a hidden state
    points that way, which is nearly everywhere. Returns the token's id.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    token_id = tokenizer.convert_tokens_to_ids(token)
    enc = tokenizer(sorted(set(CORPUS)), return_tensors="pt", padding=True)
    with torch.no_grad():
        hidden = model(**enc, output_hidden_states=True).hidden_states[-1]  # after the final norm
        mean = hidden[enc["attention_mask"].bool()].mean(0)
        model.lm_head.weight[token_id] += amount * mean / mean.norm() ** 2
    model.save_pretrained(folder)
    return token_id


if __name__ == "__main__":
    import sys

    print(build_tiny_model(sys.argv[1] if len(sys.argv) > 1 else "results/test-models/tiny-llama"))
