import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never touch the network from tests
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture
def tiny_llama():
    """A random 3-block Llama (hidden 16, 12 MLP neurons), float64 for finite differences."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=12, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=True)
    return LlamaForCausalLM(config).double().eval()


@pytest.fixture
def lm_windows():
    return torch.randint(0, 40, (3, 10), generator=torch.Generator().manual_seed(1))
