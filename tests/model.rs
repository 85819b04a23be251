//! The model runtime on a tiny random Llama the test builds: loading (folder, Hugging Face
//! cache offline, sharded safetensors), forward-pass consistency, generation, and errors.

mod common;

use bioinstruct::model::{
    generate, generate_reusing, load_files, LoadOptions, LoadedModel, ModelError, PromptPrefix,
    Resolved, Resolver, Sampling, StopReason,
};
use candle_core::{Device, Tensor, D};
use common::{tiny, Workspace, BIN};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

fn offline_resolver(root: &Path) -> Resolver {
    Resolver {
        hf_cache: root.join("hub"),
        models_dir: root.join("models"),
        offline: true,
    }
}

fn load(dir: &Path) -> LoadedModel {
    LoadedModel::load(
        &offline_resolver(dir),
        dir.to_str().expect("utf-8"),
        &LoadOptions::default(),
    )
    .expect("loads")
}

fn ids(m: &LoadedModel, text: &str) -> Tensor {
    let ids = m.encode(text).expect("encodes");
    Tensor::new(ids.as_slice(), &Device::Cpu)
        .and_then(|t| t.unsqueeze(0))
        .expect("tensor")
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_scalar::<f32>())
        .expect("diff")
}

#[test]
fn a_tiny_model_loads_from_a_folder_and_its_two_forward_paths_agree() {
    let dir = tempfile::tempdir().expect("dir");
    tiny::write(dir.path());
    let m = load(dir.path());
    assert_eq!(m.model.config.num_kv_heads, tiny::KV_HEADS);
    let input = ids(&m, "Metformin lowers glucose.");
    let t = input.dim(1).expect("len");

    // Training path (all positions, differentiable ops) against generation path (KV cache,
    // fused kernels), fed the whole prompt: f32 on both sides, tolerance 1e-4.
    let all = m
        .model
        .forward_all(&input, None)
        .expect("forward_all")
        .squeeze(0)
        .expect("squeeze");
    let mut cache = m.model.new_cache(t);
    let step = m
        .model
        .forward_step(&input, &mut cache)
        .expect("step")
        .squeeze(0)
        .expect("squeeze");
    assert!(max_diff(&all.get(t - 1).expect("last"), &step) < 1e-4);

    // The KV cache: feeding one token at a time gives every position's logits.
    let mut cache = m.model.new_cache(t);
    for i in 0..t {
        let token = input.narrow(1, i, 1).expect("token");
        let logits = m
            .model
            .forward_step(&token, &mut cache)
            .expect("step")
            .squeeze(0)
            .expect("squeeze");
        let d = max_diff(&all.get(i).expect("row"), &logits);
        assert!(d < 1e-4, "position {i}: {d}");
    }
}

#[test]
fn a_long_prompt_attends_in_chunks_as_one_token_at_a_time_does() {
    let dir = tempfile::tempdir().expect("dir");
    tiny::write(dir.path());
    let mut config = tiny::config_json();
    config["max_position_embeddings"] = serde_json::json!(512);
    std::fs::write(dir.path().join("config.json"), config.to_string()).expect("config");
    let m = load(dir.path());
    // 300 tokens: four chunks of queries, after a cached prefix of 20.
    let text: String = (0..320)
        .map(|i| (b'a' + (i * 7 % 26) as u8) as char)
        .collect();
    let input = ids(&m, &text);
    let t = input.dim(1).expect("len");
    assert_eq!(t, 320);
    let mut cache = m.model.new_cache(t);
    m.model
        .forward_logits(&input.narrow(1, 0, 20).expect("prefix"), &mut cache)
        .expect("prefix");
    let chunked = m
        .model
        .forward_logits(&input.narrow(1, 20, 300).expect("rest"), &mut cache)
        .expect("chunked")
        .squeeze(0)
        .expect("squeeze");
    let mut cache = m.model.new_cache(t);
    for i in 0..t {
        let logits = m
            .model
            .forward_step(&input.narrow(1, i, 1).expect("token"), &mut cache)
            .expect("step")
            .squeeze(0)
            .expect("squeeze");
        if i >= 20 {
            let d = max_diff(&chunked.get(i - 20).expect("row"), &logits);
            assert!(d < 1e-4, "position {i}: {d}");
        }
    }
}

#[test]
fn without_avx512_the_long_prompt_test_passes_on_candles_kernels() {
    // The test above again with the AVX-512 kernels switched off: the prompt attends
    // through candle's chunked ops and the projections through candle's matmul.
    common::rerun_without_avx512(&["a_long_prompt_attends_in_chunks_as_one_token_at_a_time_does"]);
}

#[test]
fn padding_keys_do_not_change_the_real_tokens_logits() {
    let dir = tempfile::tempdir().expect("dir");
    tiny::write(dir.path());
    let m = load(dir.path());
    let short = ids(&m, "abc");
    let padded = ids(&m, "abcxyz"); // "xyz" plays right padding
    let mask = Tensor::new(&[[1u32, 1, 1, 0, 0, 0]], &Device::Cpu).expect("mask");
    let a = m.model.forward_all(&short, None).expect("short");
    let b = m
        .model
        .forward_all(&padded, Some(&mask))
        .expect("padded")
        .narrow(1, 0, 3)
        .expect("narrow");
    assert!(max_diff(&a, &b) < 1e-5);
}

fn hub_layout(root: &Path, repo: &str, commit: &str, files: &Path) -> PathBuf {
    let repo_dir = root
        .join("hub")
        .join(format!("models--{}", repo.replace('/', "--")));
    let snapshot = repo_dir.join("snapshots").join(commit);
    std::fs::create_dir_all(&snapshot).expect("mkdir");
    std::fs::create_dir_all(repo_dir.join("refs")).expect("mkdir");
    std::fs::write(repo_dir.join("refs").join("main"), commit).expect("ref");
    for f in std::fs::read_dir(files).expect("ls") {
        let f = f.expect("entry").path();
        std::fs::copy(&f, snapshot.join(f.file_name().expect("name"))).expect("copy");
    }
    snapshot
}

#[test]
fn a_model_in_the_hugging_face_cache_loads_offline() {
    let root = tempfile::tempdir().expect("dir");
    let files = root.path().join("files");
    tiny::write(&files);
    let snapshot = hub_layout(
        root.path(),
        "bioinstruct-test/tiny-llama",
        "0123abcd",
        &files,
    );
    let r = offline_resolver(root.path());
    let Resolved::Files(found) = r
        .resolve("bioinstruct-test/tiny-llama")
        .expect("resolves offline")
    else {
        panic!("expected Hugging Face files")
    };
    assert_eq!(found.config, snapshot.join("config.json"));
    let from_cache = LoadedModel::load(&r, "bioinstruct-test/tiny-llama", &LoadOptions::default())
        .expect("loads");
    let from_folder = load(&files);
    let input = ids(&from_folder, "hello");
    let a = from_cache.model.forward_all(&input, None).expect("forward");
    let b = from_folder
        .model
        .forward_all(&input, None)
        .expect("forward");
    assert_eq!(max_diff(&a, &b), 0.0);
}

#[test]
fn sharded_safetensors_load_like_one_file() {
    let dir = tempfile::tempdir().expect("dir");
    tiny::write(dir.path());
    let whole = load(dir.path());
    let sharded = dir.path().join("sharded");
    std::fs::create_dir_all(&sharded).expect("mkdir");
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(dir.path().join(f), sharded.join(f)).expect("copy");
    }
    let weights = tiny::weights();
    let (mut one, mut two) = (
        std::collections::HashMap::new(),
        std::collections::HashMap::new(),
    );
    let mut map = serde_json::Map::new();
    for (name, t) in weights {
        let shard = if name.contains("layers.1") || name.starts_with("lm_head") {
            "model-00002-of-00002.safetensors"
        } else {
            "model-00001-of-00002.safetensors"
        };
        map.insert(name.clone(), shard.into());
        if shard.contains("00001-") {
            one.insert(name, t)
        } else {
            two.insert(name, t)
        };
    }
    candle_core::safetensors::save(&one, sharded.join("model-00001-of-00002.safetensors"))
        .expect("save");
    candle_core::safetensors::save(&two, sharded.join("model-00002-of-00002.safetensors"))
        .expect("save");
    std::fs::write(
        sharded.join("model.safetensors.index.json"),
        serde_json::json!({ "weight_map": map }).to_string(),
    )
    .expect("index");
    let m = load(&sharded);
    let input = ids(&m, "shards");
    let a = m.model.forward_all(&input, None).expect("forward");
    let b = whole.model.forward_all(&input, None).expect("forward");
    assert_eq!(max_diff(&a, &b), 0.0);
}

#[test]
fn cancel_stops_within_one_token() {
    let dir = tempfile::tempdir().expect("dir");
    tiny::write(dir.path());
    let m = load(dir.path());
    let prompt = m
        .encode("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
        .expect("encodes");
    let cancel = AtomicBool::new(false);
    let mut pieces = 0;
    let stats = generate(&m, &prompt, &Sampling::greedy(40), &cancel, |_| {
        pieces += 1;
        cancel.store(true, Ordering::Relaxed);
    })
    .expect("generates");
    // The flag is set while the first token's text is delivered; no further token follows.
    assert_eq!(stats.stop_reason, StopReason::Cancelled, "{stats:?}");
    assert_eq!((stats.generated_tokens, pieces), (1, 1));
}

#[test]
fn greedy_generation_is_deterministic_and_sampling_follows_the_seed() {
    let dir = tempfile::tempdir().expect("dir");
    tiny::write(dir.path());
    let m = load(dir.path());
    let prompt = m.encode("abc").expect("encodes");
    let run = |s: &Sampling| {
        generate(&m, &prompt, s, &AtomicBool::new(false), |_| {})
            .expect("generates")
            .text
    };
    assert_eq!(run(&Sampling::greedy(20)), run(&Sampling::greedy(20)));
    let sampled = |seed| {
        run(&Sampling {
            temperature: 1.0,
            seed,
            max_new_tokens: 20,
            ..Sampling::default()
        })
    };
    assert_eq!(sampled(7), sampled(7));
    assert_ne!(sampled(7), sampled(8));
    let long = generate(
        &m,
        &prompt,
        &Sampling::greedy(1000),
        &AtomicBool::new(false),
        |_| {},
    )
    .expect("generates");
    assert!(
        matches!(
            long.stop_reason,
            StopReason::ContextFull | StopReason::EndToken
        ),
        "{long:?}"
    );
    assert!(long.prompt_tokens + long.generated_tokens <= tiny::CONTEXT);
}

#[test]
fn a_reused_prompt_opening_generates_what_a_fresh_prompt_does() {
    let dir = tempfile::tempdir().expect("dir");
    tiny::write(dir.path());
    let m = load(dir.path());
    let opening = "You write tasks. Here are some: ";
    let prompts = ["abc d", "xyz", "hello w"]
        .map(|tail| m.encode(&format!("{opening}{tail}")).expect("encodes"));
    let shared = m.encode(opening).expect("encodes").len();
    assert!(shared >= PromptPrefix::MIN_TOKENS, "{shared}");
    let greedy = Sampling::greedy(12);
    let no = AtomicBool::new(false);
    let mut prefix = PromptPrefix::default();
    for (i, prompt) in prompts.iter().enumerate() {
        let fresh = generate(&m, prompt, &greedy, &no, |_| {}).expect("generates");
        let reused =
            generate_reusing(&m, prompt, &mut prefix, &greedy, &no, |_| {}).expect("generates");
        assert_eq!(reused.text, fresh.text, "prompt {i}");
        // The opening is learned from the first two prompts, then kept.
        assert_eq!(prefix.len(), if i == 0 { 0 } else { shared }, "prompt {i}");
    }
    // A prompt with another opening starts over, and still generates the same.
    let other = m.encode("abc").expect("encodes");
    let fresh = generate(&m, &other, &greedy, &no, |_| {}).expect("generates");
    let reused =
        generate_reusing(&m, &other, &mut prefix, &greedy, &no, |_| {}).expect("generates");
    assert_eq!(reused.text, fresh.text);
    assert!(prefix.is_empty());
}

#[test]
fn a_prompt_longer_than_the_context_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    tiny::write(dir.path());
    let m = load(dir.path());
    let prompt = m.encode(&"x".repeat(tiny::CONTEXT + 5)).expect("encodes");
    let e = generate(
        &m,
        &prompt,
        &Sampling::greedy(5),
        &AtomicBool::new(false),
        |_| {},
    )
    .expect_err("too long");
    assert!(
        matches!(
            e,
            ModelError::PromptTooLong {
                prompt_tokens: 69,
                context: 64,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn bad_model_files_name_the_file_and_the_problem() {
    let dir = tempfile::tempdir().expect("dir");
    tiny::write(dir.path());
    let files = |d: &Path| match offline_resolver(d)
        .resolve(d.to_str().expect("utf-8"))
        .expect("resolves")
    {
        Resolved::Files(f) => f,
        Resolved::Gguf(_) => panic!("files expected"),
    };

    // A truncated safetensors file.
    let truncated = dir.path().join("truncated");
    std::fs::create_dir_all(&truncated).expect("mkdir");
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(dir.path().join(f), truncated.join(f)).expect("copy");
    }
    let bytes = std::fs::read(dir.path().join("model.safetensors")).expect("read");
    std::fs::write(
        truncated.join("model.safetensors"),
        &bytes[..bytes.len() / 2],
    )
    .expect("write");
    let e = load_files(&files(&truncated), &LoadOptions::default()).expect_err("truncated");
    let msg = e.to_string();
    assert!(
        msg.starts_with(&truncated.join("model.safetensors").display().to_string()),
        "{msg}"
    );

    // An architecture the forward pass does not implement.
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).expect("mkdir");
    for f in ["tokenizer.json", "model.safetensors"] {
        std::fs::copy(dir.path().join(f), other.join(f)).expect("copy");
    }
    let mut config = tiny::config_json();
    config["model_type"] = "gpt_neox".into();
    std::fs::write(other.join("config.json"), config.to_string()).expect("write");
    let e = load_files(&files(&other), &LoadOptions::default()).expect_err("architecture");
    assert_eq!(
        e.to_string(),
        format!(
            "{}: architecture \"gpt_neox\" is not supported (supported: llama, mistral)",
            other.join("config.json").display()
        )
    );

    // A missing file in a model folder.
    std::fs::remove_file(other.join("tokenizer.json")).expect("rm");
    let e = offline_resolver(dir.path())
        .resolve(other.to_str().expect("utf-8"))
        .expect_err("incomplete");
    assert!(e.to_string().contains("tokenizer.json is missing"), "{e}");
}

fn write_gguf(path: &Path, metadata: &[(&str, candle_core::quantized::gguf_file::Value)]) {
    use candle_core::quantized::{gguf_file, QTensor};
    let mut f = std::fs::File::create(path).expect("create");
    let t = QTensor::quantize(
        &Tensor::zeros((4, 32), candle_core::DType::F32, &Device::Cpu).expect("zeros"),
        candle_core::quantized::GgmlDType::F32,
    )
    .expect("qtensor");
    let md: Vec<(&str, &gguf_file::Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    gguf_file::write(&mut f, &md, &[("token_embd.weight", &t)]).expect("write gguf");
}

#[test]
fn a_gguf_with_an_unsupported_tokenizer_is_refused_by_name() {
    use candle_core::quantized::gguf_file::Value;
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("sentencepiece.gguf");
    let llama_md = |model: &str, pre: &str| {
        vec![
            ("general.architecture", Value::String("llama".into())),
            ("llama.embedding_length", Value::U32(32)),
            ("llama.attention.head_count", Value::U32(2)),
            ("llama.feed_forward_length", Value::U32(64)),
            ("llama.block_count", Value::U32(1)),
            ("llama.vocab_size", Value::U32(4)),
            ("tokenizer.ggml.model", Value::String(model.into())),
            ("tokenizer.ggml.pre", Value::String(pre.into())),
            (
                "tokenizer.ggml.tokens",
                Value::Array(
                    ["a", "b", "c", "d"]
                        .map(|s| Value::String(s.into()))
                        .to_vec(),
                ),
            ),
            ("tokenizer.ggml.merges", Value::Array(vec![])),
        ]
    };
    write_gguf(&path, &llama_md("llama", "default"));
    let e =
        bioinstruct::model::load_gguf(&path, &LoadOptions::default()).expect_err("sentencepiece");
    assert!(
        e.to_string().starts_with(&format!(
            "{}: GGUF tokenizer model \"llama\" is not supported",
            path.display()
        )),
        "{e}"
    );

    let path = dir.path().join("unknown-pre.gguf");
    write_gguf(&path, &llama_md("gpt2", "deepseek-coder"));
    let e = bioinstruct::model::load_gguf(&path, &LoadOptions::default()).expect_err("pre");
    assert!(
        e.to_string()
            .contains("GGUF pre-tokenizer \"deepseek-coder\" is not supported"),
        "{e}"
    );

    let path = dir.path().join("not.gguf");
    std::fs::write(&path, b"GGUF but not really").expect("write");
    let e = bioinstruct::model::load_gguf(&path, &LoadOptions::default()).expect_err("garbage");
    assert!(
        e.to_string()
            .starts_with(&format!("{}: not a readable GGUF file", path.display())),
        "{e}"
    );
}

#[test]
fn the_binary_reports_bad_models_in_one_line_without_panicking() {
    let ws = Workspace::new();
    let dir = ws.home.path().join("tiny");
    tiny::write(&dir);
    let chat = |model: &str, prompt: &str| {
        ws.cmd()
            .env("HF_HOME", ws.home.path().join("hf"))
            .args([
                "chat",
                "--offline",
                "--max-new-tokens",
                "4",
                "--temperature",
                "0",
                "--model",
                model,
                prompt,
            ])
            .output()
            .expect("run")
    };
    let ok = chat(dir.to_str().expect("utf-8"), "hello");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stderr).contains("tokens/s"));

    let long = chat(dir.to_str().expect("utf-8"), &"x".repeat(200));
    let missing = chat("/nonexistent/model.gguf", "hi");
    let bad_id = chat("no-such-org/no-such-model", "hi");
    for (out, needle) in [
        (&long, "the model's context is 64 tokens"),
        (&missing, "/nonexistent/model.gguf: no such file"),
        (&bad_id, "Hugging Face Hub: skipped (offline)"),
    ] {
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("error: ") && last.contains(needle),
            "{err}"
        );
    }
    let _ = BIN;
}

#[test]
fn a_stop_string_ends_the_reply_and_is_not_output() {
    let dir = tempfile::tempdir().expect("dir");
    tiny::write(dir.path());
    let m = load(dir.path());
    let prompt = m.encode("abc").expect("encodes");
    let free = generate(
        &m,
        &prompt,
        &Sampling::greedy(30),
        &AtomicBool::new(false),
        |_| {},
    )
    .expect("generates");
    // Stop on a two-character string from the middle of the greedy reply: it arrives over
    // two tokens, so its first character must be held back until the second decides.
    let chars: Vec<char> = free.text.chars().collect();
    assert!(chars.len() >= 12, "{:?}", free.text);
    let stop: String = chars[8..10].iter().collect();
    let expected: String = free.text[..free.text.find(&stop).expect("present")].to_string();
    let mut streamed = String::new();
    let sampling = Sampling {
        stop: vec![stop.clone()],
        ..Sampling::greedy(30)
    };
    let stats = generate(&m, &prompt, &sampling, &AtomicBool::new(false), |p| {
        streamed.push_str(p)
    })
    .expect("generates");
    assert_eq!(stats.stop_reason, StopReason::StopString);
    assert_eq!(streamed, expected);
    assert_eq!(stats.text, expected);
}

#[test]
fn models_list_and_info_report_cached_models_and_their_shape() {
    let ws = Workspace::new();
    let files = ws.home.path().join("files");
    tiny::write(&files);
    let hf = ws.home.path().join("hf");
    let repo_root = hf.join("models--bioinstruct-test--tiny-llama");
    std::fs::create_dir_all(repo_root.join("refs")).expect("mkdir");
    std::fs::write(repo_root.join("refs/main"), "abc").expect("ref");
    let snapshot = repo_root.join("snapshots/abc");
    std::fs::create_dir_all(&snapshot).expect("mkdir");
    for f in std::fs::read_dir(&files).expect("ls") {
        let f = f.expect("entry").path();
        std::fs::copy(&f, snapshot.join(f.file_name().expect("name"))).expect("copy");
    }
    let run = |args: &[&str]| {
        // HF_HUB_CACHE names the cache as for Python's huggingface_hub; --offline is not
        // needed for `list` (it never downloads) and `info` finds the cached copy first.
        let out = ws
            .cmd()
            .env("HF_HUB_CACHE", &hf)
            .args(args)
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let list = run(&["models", "list"]);
    assert!(
        list.contains("not downloaded (run `bioinstruct models fetch-default`"),
        "{list}"
    );
    assert!(
        list.contains("hugging face cache bioinstruct-test/tiny-llama"),
        "{list}"
    );
    let info = run(&["models", "info", "bioinstruct-test/tiny-llama"]);
    assert!(
        info.contains(&format!("layers           {}", tiny::LAYERS)),
        "{info}"
    );
    assert!(info.contains("chat template    the model's own"), "{info}");
    assert!(
        info.contains(&format!("folder           {}", snapshot.display())),
        "{info}"
    );
}

/// Value and input gradient of `ours` and `reference` on the same random input, weighted by a
/// random cotangent; returns the largest differences.
fn compare_op(
    shape: &[usize],
    ours: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
    reference: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
) -> (f32, f32) {
    let n: usize = shape.iter().product();
    let x = candle_core::Var::from_tensor(
        &Tensor::from_vec(common::tiny::values(n, 1, 2.0), shape, &Device::Cpu).expect("x"),
    )
    .expect("var");
    let w = Tensor::from_vec(common::tiny::values(n, 2, 1.0), shape, &Device::Cpu).expect("w");
    let run = |f: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>| {
        let y = f(x.as_tensor()).expect("forward");
        let g = (&y * &w)
            .and_then(|l| l.sum_all())
            .and_then(|l| l.backward())
            .expect("backward");
        (y, g.get(x.as_tensor()).expect("a gradient").clone())
    };
    let (y1, g1) = run(&ours);
    let (y2, g2) = run(&reference);
    (max_diff(&y1, &y2), max_diff(&g1, &g2))
}

#[test]
fn fused_kernels_with_a_backward_match_the_composed_ops() {
    use bioinstruct::model::autograd;
    // f32: the fused kernels and the composed ops round differently, hence 1e-5.
    let (t, half) = (6, 4);
    let cos = Tensor::from_vec(
        common::tiny::values(t * half, 3, 1.0),
        (t, half),
        &Device::Cpu,
    )
    .expect("cos");
    let sin = Tensor::from_vec(
        common::tiny::values(t * half, 4, 1.0),
        (t, half),
        &Device::Cpu,
    )
    .expect("sin");
    let weight = Tensor::from_vec(common::tiny::values(16, 5, 1.0), 16, &Device::Cpu).expect("w");
    // Causal, with -inf above the diagonal as the model's mask.
    let causal: Vec<f32> = (0..25)
        .map(|i| {
            if i % 5 > i / 5 {
                f32::NEG_INFINITY
            } else {
                0.0
            }
        })
        .collect();
    let mask = Tensor::from_vec(causal, (5, 5), &Device::Cpu).expect("mask");
    let cases: Vec<(&str, (f32, f32))> = vec![
        (
            "softmax",
            compare_op(&[2, 3, 5, 7], autograd::softmax_last_dim, |x| {
                candle_nn::ops::softmax(x, D::Minus1)
            }),
        ),
        (
            "scaled masked softmax",
            compare_op(
                &[2, 3, 5, 5],
                |x| autograd::scaled_masked_softmax(x, 0.125, Some(&mask)),
                |x| candle_nn::ops::softmax(&(x * 0.125)?.broadcast_add(&mask)?, D::Minus1),
            ),
        ),
        (
            "rms_norm",
            compare_op(
                &[2, 5, 16],
                |x| autograd::rms_norm(x, &weight, 1e-5),
                |x| candle_nn::ops::rms_norm_slow(x, &weight, 1e-5),
            ),
        ),
        (
            "rope (halves)",
            compare_op(
                &[1, 2, t, 2 * half],
                |x| autograd::rope(x, &cos, &sin, false),
                |x| candle_nn::rotary_emb::rope_slow(x, &cos, &sin),
            ),
        ),
        (
            "rope (interleaved)",
            compare_op(
                &[1, 2, t, 2 * half],
                |x| autograd::rope(x, &cos, &sin, true),
                |x| candle_nn::rotary_emb::rope_i_slow(x, &cos, &sin),
            ),
        ),
    ];
    for (name, (value, grad)) in cases {
        assert!(
            value < 1e-5 && grad < 1e-5,
            "{name}: value {value}, gradient {grad}"
        );
    }
}

#[test]
fn batched_decode_of_sequences_at_different_positions_equals_decoding_each_alone() {
    let dir = tempfile::tempdir().expect("dir");
    tiny::write(dir.path());
    let m = load(dir.path());
    let d =
        common::batched_decode_difference(&m, &["Aspirin.", "Metformin lowers glucose.", "BP"], 6);
    assert!(d < 1e-5, "{d}");
}

/// A clone of `m` with a LoRA adapter on `targets`, its `lora_B` seeded random so that it
/// changes the output.
fn with_adapter(m: &LoadedModel, targets: &[&str], seed: u64) -> LoadedModel {
    use bioinstruct::model::lora::{Lora, LoraConfig};
    let mut tuned = m.clone();
    let config = LoraConfig {
        target_modules: targets.iter().map(|t| t.to_string()).collect(),
        ..LoraConfig::default()
    };
    let lora = Lora::init(&mut tuned.model, &config, seed).expect("lora");
    lora.set_training(false); // no dropout
    for (i, module) in lora.modules.iter().enumerate() {
        let b = module.lora_b.as_tensor();
        let t = candle_core::Tensor::from_vec(
            tiny::values(b.elem_count(), seed * 100 + i as u64, 0.5),
            b.dims(),
            &candle_core::Device::Cpu,
        )
        .expect("values");
        module.lora_b.set(&t).expect("set");
    }
    tuned
}

#[test]
fn one_batched_decode_step_mixes_the_base_and_two_adapters_each_row_as_alone() {
    let dir = tempfile::tempdir().expect("dir");
    tiny::write(dir.path());
    let base = load(dir.path());
    let a = with_adapter(&base, &["all-linear"], 1);
    let b = with_adapter(&base, &["q_proj", "v_proj"], 2);
    let rows = [
        (&a, "Aspirin."),
        (&base, "Metformin lowers glucose."),
        (&b, "BP"),
        (&a, "Sepsis is"),
    ];
    let d = common::mixed_decode_difference(&rows, 6);
    assert!(d < 1e-5, "{d}");
    // The adapters change the rows: the same prompt through the base and through each
    // adapter decodes differently (so the rows' adapters are not mixed up).
    let same = common::mixed_decode_difference(&[(&base, "Aspirin."), (&a, "Aspirin.")], 1);
    assert!(same < 1e-5, "{same}");
    let ids = base.encode("Aspirin.").expect("ids");
    let logits = |m: &LoadedModel| {
        let mut cache = m.model.new_cache(ids.len() + 1);
        let x = candle_core::Tensor::new(ids.as_slice(), &candle_core::Device::Cpu)
            .and_then(|t| t.unsqueeze(0))
            .expect("ids");
        m.model
            .forward_step(&x, &mut cache)
            .and_then(|l| l.flatten_all())
            .and_then(|l| l.to_vec1::<f32>())
            .expect("logits")
    };
    let (lb, la, lbb) = (logits(&base), logits(&a), logits(&b));
    let apart = |x: &[f32], y: &[f32]| {
        x.iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max)
    };
    assert!(apart(&lb, &la) > 1e-3 && apart(&lb, &lbb) > 1e-3 && apart(&la, &lbb) > 1e-3);
}

#[test]
fn a_batch_refuses_a_model_with_other_base_weights() {
    let dir = tempfile::tempdir().expect("dir");
    tiny::write(dir.path());
    let one = load(dir.path());
    let other = load(dir.path()); // the same files, loaded again: other tensors
    let ids = one.encode("BP").expect("ids");
    let mut caches: Vec<_> = [&one, &other]
        .iter()
        .map(|m| {
            let mut c = m.model.new_cache(ids.len() + 2);
            let x = candle_core::Tensor::new(ids.as_slice(), &candle_core::Device::Cpu)
                .and_then(|t| t.unsqueeze(0))
                .expect("ids");
            m.model.forward_step(&x, &mut c).expect("prompt");
            c
        })
        .collect();
    let mut refs: Vec<&mut bioinstruct::model::Cache> = caches.iter_mut().collect();
    let e = one
        .model
        .forward_decode_rows(&[5, 5], &mut refs, &[&one.model, &other.model])
        .expect_err("refused");
    assert!(
        e.to_string().contains("row 1's model does not share"),
        "{e}"
    );
}
