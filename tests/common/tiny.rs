//! A tiny random Llama written to disk the way Hugging Face lays a model out: config.json,
//! tokenizer.json (byte-level BPE over newline and printable ASCII, no merges, so every
//! token is one character), tokenizer_config.json with a ChatML template, and
//! model.safetensors with seeded random weights.

use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

pub const HIDDEN: usize = 64;
pub const LAYERS: usize = 2;
pub const HEADS: usize = 4;
pub const KV_HEADS: usize = 2;
pub const INTERMEDIATE: usize = 128;
pub const CONTEXT: usize = 64;

/// Special tokens first, then one token per byte-level character.
pub fn vocabulary() -> Vec<String> {
    let mut v: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        .map(String::from)
        .to_vec();
    // GPT-2's bytes_to_unicode: printable ASCII maps to itself, space to U+0120 (Ġ),
    // newline to U+010A (Ċ).
    v.push('\u{10A}'.to_string());
    v.push('\u{120}'.to_string());
    v.extend((33u8..=126).map(|b| (b as char).to_string()));
    v
}

/// Deterministic pseudo-random values in [-scale, scale].
pub fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    bioinstruct::rng::XorShift64Star::new(seed).uniform(n, scale)
}

/// Every tensor of the tiny model, by Hugging Face name.
pub fn weights() -> HashMap<String, Tensor> {
    let vocab = vocabulary().len();
    let head_dim = HIDDEN / HEADS;
    let seed = std::cell::Cell::new(1u64);
    let t = |shape: &[usize], scale: f32| {
        seed.set(seed.get() + 1);
        Tensor::from_vec(
            values(shape.iter().product(), seed.get(), scale),
            shape,
            &Device::Cpu,
        )
        .expect("tensor")
    };
    let mut w = HashMap::new();
    w.insert(
        "model.embed_tokens.weight".to_string(),
        t(&[vocab, HIDDEN], 1.0),
    );
    for i in 0..LAYERS {
        let p = format!("model.layers.{i}");
        let shapes = [
            ("self_attn.q_proj", [HEADS * head_dim, HIDDEN]),
            ("self_attn.k_proj", [KV_HEADS * head_dim, HIDDEN]),
            ("self_attn.v_proj", [KV_HEADS * head_dim, HIDDEN]),
            ("self_attn.o_proj", [HIDDEN, HEADS * head_dim]),
            ("mlp.gate_proj", [INTERMEDIATE, HIDDEN]),
            ("mlp.up_proj", [INTERMEDIATE, HIDDEN]),
            ("mlp.down_proj", [HIDDEN, INTERMEDIATE]),
        ];
        for (name, shape) in shapes {
            w.insert(format!("{p}.{name}.weight"), t(&shape, 0.2));
        }
        for norm in ["input_layernorm", "post_attention_layernorm"] {
            let ones =
                Tensor::from_vec(values(HIDDEN, seed.get() + 100, 0.1), HIDDEN, &Device::Cpu)
                    .and_then(|x| x + 1.0)
                    .expect("norm");
            w.insert(format!("{p}.{norm}.weight"), ones);
        }
    }
    w.insert(
        "model.norm.weight".to_string(),
        Tensor::ones(HIDDEN, candle_core::DType::F32, &Device::Cpu).expect("ones"),
    );
    w.insert("lm_head.weight".to_string(), t(&[vocab, HIDDEN], 0.5));
    w
}

pub fn config_json() -> serde_json::Value {
    serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "num_hidden_layers": LAYERS,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "vocab_size": vocabulary().len(),
        "max_position_embeddings": CONTEXT,
        "tie_word_embeddings": false,
        "bos_token_id": 1,
        "eos_token_id": 2
    })
}

pub fn tokenizer() -> Tokenizer {
    let vocab: tokenizers::models::bpe::Vocab = vocabulary()
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, vec![])
        .build()
        .expect("bpe");
    let mut tok = Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    tok.add_special_tokens(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"].map(|t| AddedToken::from(t, true)),
    )
    .expect("specials");
    tok
}

/// Writes the tiny model's files into `dir`.
pub fn write(dir: &Path) {
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(dir.join("config.json"), config_json().to_string()).expect("config");
    tokenizer()
        .save(dir.join("tokenizer.json"), false)
        .expect("tokenizer");
    let template = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
    std::fs::write(
        dir.join("tokenizer_config.json"),
        serde_json::json!({ "chat_template": template, "bos_token": "<|im_start|>", "eos_token": "<|im_end|>" }).to_string(),
    )
    .expect("tokenizer_config");
    candle_core::safetensors::save(&weights(), dir.join("model.safetensors")).expect("weights");
}
