//! LoRA on a tiny random Llama: identity at init, gradients, PEFT format, and the GGUF
//! row order of q/k.

mod common;

use bioinstruct::model::linear::BaseWeight;
use bioinstruct::model::lora::{
    permute_head_rows, Lora, LoraConfig, ADAPTER_CONFIG, ADAPTER_WEIGHTS,
};
use bioinstruct::model::{config::RopeLayout, LoadOptions, LoadedModel, Resolver};
use candle_core::{DType, Device, Tensor, D};
use common::tiny;
use std::path::Path;

fn load(dir: &Path, dtype: DType) -> LoadedModel {
    let resolver = Resolver {
        hf_cache: dir.join("hub"),
        models_dir: dir.join("models"),
        offline: true,
    };
    let options = LoadOptions {
        dtype,
        ..LoadOptions::default()
    };
    LoadedModel::load(&resolver, dir.to_str().expect("utf-8"), &options).expect("loads")
}

fn tiny_model(dtype: DType) -> (tempfile::TempDir, LoadedModel) {
    let dir = tempfile::tempdir().expect("dir");
    tiny::write(dir.path());
    let m = load(dir.path(), dtype);
    (dir, m)
}

fn input(m: &LoadedModel) -> Tensor {
    let ids = m.encode("Metformin lowers glucose.").expect("encodes");
    Tensor::new(ids.as_slice(), &Device::Cpu)
        .and_then(|t| t.unsqueeze(0))
        .expect("tensor")
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.to_dtype(DType::F64))
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_scalar::<f64>())
        .expect("diff")
}

/// Gives every `lora_B` seeded random values so the adapter changes the output.
fn randomize_b(lora: &Lora, seed: u64) {
    for (i, m) in lora.modules.iter().enumerate() {
        let b = m.lora_b.as_tensor();
        let t = Tensor::from_vec(
            tiny::values(b.elem_count(), seed + i as u64, 0.5),
            b.dims(),
            &Device::Cpu,
        )
        .and_then(|t| t.to_dtype(b.dtype()))
        .expect("values");
        m.lora_b.set(&t).expect("set");
    }
}

#[test]
fn a_new_adapter_leaves_the_model_unchanged() {
    let (_dir, mut m) = tiny_model(DType::F32);
    let x = input(&m);
    let before = m.model.forward_all(&x, None).expect("forward");
    let config = LoraConfig {
        target_modules: vec!["all-linear".into()],
        ..LoraConfig::default()
    };
    let lora = Lora::init(&mut m.model, &config, 1).expect("init");
    lora.set_training(false);
    assert_eq!(lora.modules.len(), tiny::LAYERS * 7);
    let after = m.model.forward_all(&x, None).expect("forward");
    assert_eq!(max_diff(&before, &after), 0.0, "B = 0 at init");
    // q_proj + v_proj by default: r·(in + out) per module.
    let head_dim = tiny::HIDDEN / tiny::HEADS;
    let (_dir2, mut m2) = tiny_model(DType::F32);
    let lora = Lora::init(&mut m2.model, &LoraConfig::default(), 1).expect("init");
    let per_layer = 8 * (tiny::HIDDEN + tiny::HEADS * head_dim)
        + 8 * (tiny::HIDDEN + tiny::KV_HEADS * head_dim);
    assert_eq!(lora.parameter_count(), tiny::LAYERS * per_layer);
    assert_eq!(
        LoraConfig::default().parameter_count(&m2.model),
        lora.parameter_count()
    );
}

#[test]
fn lora_gradients_match_finite_differences() {
    // f64 throughout, so central differences with eps = 1e-5 are accurate to ~1e-9.
    let (_dir, mut m) = tiny_model(DType::F64);
    let config = LoraConfig {
        r: 4,
        target_modules: vec!["q_proj".into(), "down_proj".into()],
        ..LoraConfig::default()
    };
    let lora = Lora::init(&mut m.model, &config, 3).expect("init");
    lora.set_training(false); // no dropout: the loss must be a function of the weights
    randomize_b(&lora, 5);
    let x = input(&m);
    let targets = x
        .narrow(1, 1, x.dim(1).expect("len") - 1)
        .expect("targets")
        .squeeze(0)
        .expect("squeeze");
    let loss = |m: &LoadedModel| -> Tensor {
        let logits = m
            .model
            .forward_all(&x, None)
            .expect("forward")
            .squeeze(0)
            .expect("squeeze");
        let logits = logits
            .narrow(0, 0, logits.dim(0).expect("len") - 1)
            .expect("narrow");
        let logp = candle_nn::ops::log_softmax(&logits, D::Minus1).expect("log_softmax");
        logp.gather(&targets.unsqueeze(1).expect("unsqueeze"), 1)
            .expect("gather")
            .mean_all()
            .expect("mean")
            .neg()
            .expect("neg")
    };
    let grads = loss(&m).backward().expect("backward");
    let eps = 1e-5;
    for module in [&lora.modules[0], &lora.modules[lora.modules.len() - 1]] {
        for var in [&module.lora_a, &module.lora_b] {
            let g = grads
                .get(var.as_tensor())
                .expect("gradient")
                .flatten_all()
                .expect("flat")
                .to_vec1::<f64>()
                .expect("vec");
            let original = var
                .as_tensor()
                .flatten_all()
                .expect("flat")
                .to_vec1::<f64>()
                .expect("vec");
            for idx in [0, original.len() / 2, original.len() - 1] {
                let at = |delta: f64| {
                    let mut v = original.clone();
                    v[idx] += delta;
                    var.set(
                        &Tensor::from_vec(v, var.as_tensor().dims(), &Device::Cpu).expect("tensor"),
                    )
                    .expect("set");
                    loss(&m).to_scalar::<f64>().expect("scalar")
                };
                let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
                var.set(
                    &Tensor::from_vec(original.clone(), var.as_tensor().dims(), &Device::Cpu)
                        .expect("tensor"),
                )
                .expect("restore");
                let err = (g[idx] - numeric).abs() / numeric.abs().max(1e-6);
                assert!(
                    err < 1e-4,
                    "{} [{idx}]: autograd {} vs finite difference {numeric}",
                    module.path,
                    g[idx]
                );
            }
        }
    }
}

/// The tiny model in `dtype` with seeded adapters on `q_proj`, `k_proj` and `v_proj` (no
/// dropout, random `lora_B`), for comparing attention paths.
fn attention_adapted(dtype: DType, seed: u64) -> (tempfile::TempDir, LoadedModel, Lora) {
    let (dir, mut m) = tiny_model(dtype);
    let config = LoraConfig {
        r: 4,
        target_modules: vec!["q_proj".into(), "k_proj".into(), "v_proj".into()],
        ..LoraConfig::default()
    };
    let lora = Lora::init(&mut m.model, &config, seed).expect("init");
    lora.set_training(false);
    randomize_b(&lora, seed + 4);
    (dir, m, lora)
}

/// The next-token NLL summed over row `row` of `logits` `[b, t, vocab]`, for that row's first
/// `n` tokens `ids` `[1, n]`.
fn next_token_nll(logits: &Tensor, row: usize, ids: &Tensor) -> Tensor {
    let n = ids.dim(1).expect("len");
    let logits = logits
        .narrow(0, row, 1)
        .and_then(|l| l.narrow(1, 0, n - 1))
        .expect("rows");
    let targets = ids
        .narrow(1, 1, n - 1)
        .and_then(|t| t.unsqueeze(2))
        .and_then(|t| t.contiguous())
        .expect("targets");
    candle_nn::ops::log_softmax(&logits, D::Minus1)
        .and_then(|l| l.gather(&targets, 2))
        .and_then(|l| l.sum_all())
        .and_then(|l| l.neg())
        .expect("nll")
}

#[test]
fn the_fused_training_attention_gives_the_composed_ops_gradients() {
    // An f32 model takes the fused causal attention (its own backward) on a CPU with
    // AVX-512; the same model in f64 takes candle's composed ops and autograd (the fused op
    // is f32 only). Same weights, same adapters: same loss and adapter gradients, to f32's
    // precision.
    let (_dir, m, lora) = attention_adapted(DType::F32, 3);
    let (_dir64, m64, lora64) = attention_adapted(DType::F64, 3);
    for (a, b) in lora.modules.iter().zip(&lora64.modules) {
        for (from, to) in [(&a.lora_a, &b.lora_a), (&a.lora_b, &b.lora_b)] {
            to.set(&from.as_tensor().to_dtype(DType::F64).expect("f64"))
                .expect("set");
        }
    }
    let x = input(&m);
    let loss =
        |m: &LoadedModel| next_token_nll(&m.model.forward_all(&x, None).expect("forward"), 0, &x);
    let (fused, composed) = (loss(&m), loss(&m64));
    let (a, b) = (
        fused.to_scalar::<f32>().expect("scalar"),
        composed.to_scalar::<f64>().expect("scalar"),
    );
    assert!(
        (f64::from(a) - b).abs() <= 1e-5 * b.abs(),
        "loss {a} vs {b}"
    );
    assert_same_gradients(
        (&lora, &fused.backward().expect("backward")),
        (&lora64, &composed.backward().expect("backward")),
    );
}

/// Every adapter gradient in `a` equals the same module's in `b` (the adapters of two models
/// with the same modules, or one model's twice), to 1e-4 of the largest.
fn assert_same_gradients(
    a: (&Lora, &candle_core::backprop::GradStore),
    b: (&Lora, &candle_core::backprop::GradStore),
) {
    for (ma, mb) in a.0.modules.iter().zip(&b.0.modules) {
        for (va, vb) in [(&ma.lora_a, &mb.lora_a), (&ma.lora_b, &mb.lora_b)] {
            let gradient = |store: &candle_core::backprop::GradStore, var: &candle_core::Var| {
                store
                    .get(var.as_tensor())
                    .expect("gradient")
                    .to_dtype(DType::F64)
                    .expect("f64")
            };
            let (ours, want) = (gradient(a.1, va), gradient(b.1, vb));
            let scale = want
                .abs()
                .and_then(|g| g.max_all())
                .and_then(|g| g.to_scalar::<f64>())
                .expect("max");
            let diff = max_diff(&ours, &want);
            assert!(
                scale > 0.0 && diff <= 1e-4 * scale,
                "{}: max difference {diff:e} for gradients up to {scale:e}",
                ma.path
            );
        }
    }
}

#[test]
fn a_right_padded_batch_trains_as_its_sequences_alone() {
    // A batch padded on the right takes the causal mask alone (and, on a CPU with AVX-512,
    // the fused attention over each sequence): its loss over the real tokens, and every
    // adapter gradient, equal those of the sequences on their own.
    let (_dir, m, lora) = attention_adapted(DType::F32, 7);
    let x = input(&m);
    let t = x.dim(1).expect("len");
    // Another text, 3 tokens shorter.
    let other = m
        .encode("Insulin moves glucose into cells.")
        .expect("encodes");
    let short = Tensor::new(&other[..t - 3], &Device::Cpu)
        .and_then(|s| s.unsqueeze(0))
        .expect("short");
    // Three arbitrary tokens as the padding.
    let padded = Tensor::cat(&[&short, &x.narrow(1, 0, 3).expect("pad")], 1).expect("padded");
    let batch = Tensor::cat(&[&x, &padded], 0).expect("batch");
    let mask: Vec<u32> = (0..2 * t).map(|i| u32::from(i < 2 * t - 3)).collect();
    let mask = Tensor::from_vec(mask, (2, t), &Device::Cpu).expect("mask");
    let together = {
        let logits = m.model.forward_all(&batch, Some(&mask)).expect("forward");
        (next_token_nll(&logits, 0, &x) + next_token_nll(&logits, 1, &short)).expect("sum")
    };
    let alone = {
        let (a, b) = (
            m.model.forward_all(&x, None).expect("forward"),
            m.model.forward_all(&short, None).expect("forward"),
        );
        (next_token_nll(&a, 0, &x) + next_token_nll(&b, 0, &short)).expect("sum")
    };
    let (a, b) = (
        together.to_scalar::<f32>().expect("scalar"),
        alone.to_scalar::<f32>().expect("scalar"),
    );
    assert!((a - b).abs() <= 1e-5 * a.abs(), "loss {a} vs {b}");
    assert_same_gradients(
        (&lora, &together.backward().expect("backward")),
        (&lora, &alone.backward().expect("backward")),
    );
}

#[test]
fn adapters_are_saved_with_peft_names_shapes_and_config_and_load_back() {
    let (dir, mut m) = tiny_model(DType::F32);
    let lora = Lora::init(
        &mut m.model,
        &LoraConfig {
            r: 4,
            lora_alpha: 8.0,
            ..LoraConfig::default()
        },
        1,
    )
    .expect("init");
    lora.set_training(false);
    randomize_b(&lora, 7);
    let x = input(&m);
    let trained = m.model.forward_all(&x, None).expect("forward");
    let out = dir.path().join("adapter");
    lora.save_peft(&m.model, &out, "tiny-llama").expect("saves");

    let tensors = candle_core::safetensors::load(out.join(ADAPTER_WEIGHTS), &Device::Cpu)
        .expect("safetensors");
    let head_dim = tiny::HIDDEN / tiny::HEADS;
    let a = &tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"];
    let b = &tensors["base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"];
    assert_eq!(a.dims(), &[4, tiny::HIDDEN]);
    assert_eq!(b.dims(), &[tiny::KV_HEADS * head_dim, 4]);
    assert_eq!(tensors.len(), tiny::LAYERS * 2 * 2);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join(ADAPTER_CONFIG)).expect("config"))
            .expect("json");
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(config["task_type"], "CAUSAL_LM");
    assert_eq!(config["r"], 4);
    assert_eq!(config["lora_alpha"], 8.0);
    assert_eq!(
        config["target_modules"],
        serde_json::json!(["q_proj", "v_proj"])
    );
    assert_eq!(config["base_model_name_or_path"], "tiny-llama");

    let mut fresh = load(dir.path(), DType::F32);
    Lora::load_peft(&mut fresh.model, &out).expect("loads");
    let loaded = fresh.model.forward_all(&x, None).expect("forward");
    assert_eq!(max_diff(&trained, &loaded), 0.0);
}

/// The tiny model with q/k rows in llama.cpp's GGUF order and interleaved RoPE.
fn to_gguf_layout(m: &mut LoadedModel) {
    let (heads, kv_heads) = (m.model.config.num_heads, m.model.config.num_kv_heads);
    for block in &mut m.model.layers {
        for (linear, h) in [(&mut block.q_proj, heads), (&mut block.k_proj, kv_heads)] {
            let BaseWeight::Float(l) = linear.base() else {
                panic!("float weights")
            };
            let w = permute_head_rows(l.weight(), h, true).expect("permute");
            *linear = bioinstruct::model::Linear::from_weight(w).expect("linear");
        }
    }
    m.model.config.rope_layout = RopeLayout::Interleaved;
}

#[test]
fn gguf_row_order_gives_the_same_model_and_adapters_cross_over() {
    let (dir, hf) = tiny_model(DType::F32);
    let mut gguf = load(dir.path(), DType::F32);
    to_gguf_layout(&mut gguf);
    let x = input(&hf);
    let a = hf.model.forward_all(&x, None).expect("forward");
    let b = gguf.model.forward_all(&x, None).expect("forward");
    assert!(
        max_diff(&a, &b) < 1e-5,
        "permuted q/k + interleaved RoPE = the same model"
    );

    // Trained on the GGUF layout, saved, loaded onto the Hugging Face layout: same logits.
    let mut gguf_trained = load(dir.path(), DType::F32);
    to_gguf_layout(&mut gguf_trained);
    let config = LoraConfig {
        target_modules: vec!["q_proj".into(), "k_proj".into()],
        ..LoraConfig::default()
    };
    let lora = Lora::init(&mut gguf_trained.model, &config, 2).expect("init");
    lora.set_training(false);
    randomize_b(&lora, 9);
    let adapter = dir.path().join("from-gguf");
    lora.save_peft(&gguf_trained.model, &adapter, "tiny")
        .expect("saves");
    let mut hf_loaded = load(dir.path(), DType::F32);
    Lora::load_peft(&mut hf_loaded.model, &adapter).expect("loads");
    let with_gguf = gguf_trained.model.forward_all(&x, None).expect("forward");
    let with_hf = hf_loaded.model.forward_all(&x, None).expect("forward");
    assert!(max_diff(&with_gguf, &with_hf) < 1e-5);
    assert!(
        max_diff(&with_gguf, &a) > 1e-3,
        "the adapter changes the output"
    );

    // And back: a PEFT adapter (Hugging Face order) onto the GGUF layout.
    let mut gguf_loaded = load(dir.path(), DType::F32);
    to_gguf_layout(&mut gguf_loaded);
    Lora::load_peft(&mut gguf_loaded.model, &adapter).expect("loads");
    assert!(
        max_diff(
            &gguf_loaded.model.forward_all(&x, None).expect("forward"),
            &with_hf
        ) < 1e-5
    );
}

#[test]
fn bad_lora_settings_and_adapters_are_refused_with_reasons() {
    let (dir, mut m) = tiny_model(DType::F32);
    let bad = LoraConfig {
        r: 0,
        target_modules: vec!["qkv_proj".into()],
        ..LoraConfig::default()
    };
    let e = Lora::init(&mut m.model, &bad, 1)
        .expect_err("bad config")
        .to_string();
    assert!(
        e.contains("r: must be at least 1") && e.contains("unknown module \"qkv_proj\""),
        "{e}"
    );

    let missing = dir.path().join("no-adapter");
    let e = Lora::load_peft(&mut m.model, &missing)
        .expect_err("missing")
        .to_string();
    assert!(
        e.starts_with(&missing.join(ADAPTER_CONFIG).display().to_string()),
        "{e}"
    );
}

#[test]
fn chat_applies_an_adapter_and_names_a_broken_one() {
    let (dir, mut m) = tiny_model(DType::F32);
    let lora = Lora::init(&mut m.model, &LoraConfig::default(), 1).expect("init");
    randomize_b(&lora, 11);
    let adapter = dir.path().join("adapter");
    lora.save_peft(&m.model, &adapter, "tiny").expect("saves");
    let chat = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_bioinstruct"))
            .env("BIOINSTRUCT_HOME", dir.path().join("home"))
            .args([
                "chat",
                "--offline",
                "--temperature",
                "0",
                "--max-new-tokens",
                "12",
                "--model",
            ])
            .arg(dir.path())
            .args(extra)
            .arg("hello")
            .output()
            .expect("runs")
    };
    let base = chat(&[]);
    let tuned = chat(&["--adapter", adapter.to_str().expect("utf-8")]);
    assert!(
        base.status.success() && tuned.status.success(),
        "{}",
        String::from_utf8_lossy(&tuned.stderr)
    );
    assert!(
        String::from_utf8_lossy(&tuned.stderr).contains("adapter"),
        "reports the adapter"
    );
    assert_ne!(
        base.stdout, tuned.stdout,
        "the adapter changes the greedy reply"
    );

    std::fs::remove_file(adapter.join(ADAPTER_WEIGHTS)).expect("rm");
    let broken = chat(&["--adapter", adapter.to_str().expect("utf-8")]);
    assert_eq!(broken.status.code(), Some(1));
    let err = String::from_utf8_lossy(&broken.stderr);
    assert!(
        err.lines()
            .last()
            .unwrap_or_default()
            .contains(ADAPTER_WEIGHTS),
        "{err}"
    );
}

#[test]
fn adamw_on_the_adapters_lowers_the_loss_and_leaves_the_base_frozen() {
    use bioinstruct::data::{Category, Instruction};
    use bioinstruct::train::data::{build_examples, BuildOptions, Example, PromptFormat};
    use bioinstruct::train::optim::{
        clip_grad_norm, collate, masked_nll_sum, AdamW, AdamWParams, Schedule, ScheduleKind,
    };

    let (_dir, mut m) = tiny_model(DType::F32);
    let q_before = match m.model.layers[0].q_proj.base() {
        BaseWeight::Float(l) => l.weight().clone(),
        _ => panic!("float"),
    };
    let config = LoraConfig {
        lora_dropout: 0.0,
        target_modules: vec!["all-linear".into()],
        ..LoraConfig::default()
    };
    let lora = Lora::init(&mut m.model, &config, 1).expect("init");
    let record = |id: &str, ins: &str, out: &str| Instruction {
        id: id.into(),
        category: Category::Qa,
        task: "t".into(),
        instruction: ins.into(),
        input: String::new(),
        output: out.into(),
        extra: Default::default(),
    };
    let records = [
        record("a", "Name a statin.", "Atorvastatin."),
        record("b", "Name a biguanide.", "Metformin."),
        record("c", "Name an ACE inhibitor.", "Lisinopril."),
    ];
    let end = m.tokenizer.token_to_id("<|im_end|>").expect("end");
    // ChatML keeps prompts short enough for the tiny model's 64-token context (its
    // tokenizer spends a token per character).
    let template = m.template(Some("chatml")).expect("template");
    let options = BuildOptions {
        format: PromptFormat::Chat,
        template: Some(&template),
        end_token: end,
        max_seq_len: tiny::CONTEXT,
        categories: &[],
    };
    let (examples, _) = build_examples(&records, &m.tokenizer, &options).expect("examples");
    let refs: Vec<&Example> = examples.iter().collect();
    let batch = collate(&refs, 0, &Device::Cpu).expect("batch");
    let loss = |m: &LoadedModel| {
        let logits = m
            .model
            .forward_all(&batch.input_ids, Some(&batch.attention_mask))
            .expect("forward");
        (masked_nll_sum(&logits, &batch.labels).expect("nll") / batch.loss_tokens as f64)
            .expect("mean")
    };
    let vars = lora.vars();
    let mut opt = AdamW::new(vars.clone(), AdamWParams::default()).expect("adamw");
    let schedule = Schedule {
        peak_lr: 1e-2,
        warmup_steps: 5,
        total_steps: 60,
        kind: ScheduleKind::Cosine,
    };
    let first = loss(&m).to_scalar::<f32>().expect("scalar");
    for step in 0..60 {
        let mut grads = loss(&m).backward().expect("backward");
        let norm = clip_grad_norm(&mut grads, &vars, 1.0).expect("clip");
        assert!(norm.is_finite());
        opt.set_lr(schedule.lr(step));
        opt.step(&grads).expect("step");
    }
    let last = loss(&m).to_scalar::<f32>().expect("scalar");
    assert!(last < 0.5 * first, "loss {first} -> {last}");
    let q_after = match m.model.layers[0].q_proj.base() {
        BaseWeight::Float(l) => l.weight().clone(),
        _ => panic!("float"),
    };
    assert_eq!(
        max_diff(&q_before, &q_after),
        0.0,
        "base weights are frozen"
    );
}

#[test]
fn merged_weights_give_the_logits_of_base_plus_adapter() {
    // f32 throughout: W + s·BA computed once versus W x + s·B(A x) at every call differ only
    // by rounding; the tolerance is 1e-4 on logits of magnitude ~1.
    let (dir, mut hf) = tiny_model(DType::F32);
    let config = LoraConfig {
        target_modules: vec!["all-linear".into()],
        lora_alpha: 32.0,
        ..LoraConfig::default()
    };
    let lora = Lora::init(&mut hf.model, &config, 5).expect("init");
    lora.set_training(false);
    randomize_b(&lora, 21);
    let x = input(&hf);
    let want = hf.model.forward_all(&x, None).expect("forward");
    let base = load(dir.path(), DType::F32)
        .model
        .forward_all(&x, None)
        .expect("forward");
    assert!(max_diff(&want, &base) > 1e-2, "the adapter matters");

    // The library on the Hugging Face layout, and on the GGUF layout (q/k rows put back).
    let merged = dir.path().join("merged");
    bioinstruct::model::merge::write_merged(&hf, Some(&lora), &merged).expect("merges");
    let got = load(&merged, DType::F32)
        .model
        .forward_all(&x, None)
        .expect("forward");
    assert!(max_diff(&want, &got) < 1e-4, "{}", max_diff(&want, &got));
    let adapter = dir.path().join("adapter");
    lora.save_peft(&hf.model, &adapter, "tiny").expect("saves");
    let mut gguf = load(dir.path(), DType::F32);
    to_gguf_layout(&mut gguf);
    let gguf_lora = Lora::load_peft(&mut gguf.model, &adapter).expect("loads");
    let from_gguf = dir.path().join("merged-from-gguf");
    bioinstruct::model::merge::write_merged(&gguf, Some(&gguf_lora), &from_gguf).expect("merges");
    let got = load(&from_gguf, DType::F32)
        .model
        .forward_all(&x, None)
        .expect("forward");
    assert!(max_diff(&want, &got) < 1e-4, "{}", max_diff(&want, &got));
    assert!(
        bioinstruct::model::merge::write_merged(&hf, Some(&lora), &merged).is_err(),
        "an existing folder is never overwritten"
    );

    // The command: base from the adapter's config unless --base is given.
    let ws = common::Workspace::new();
    let out = ws.home.path().join("cli-merged");
    let said = ws.ok(&[
        "adapters",
        "merge",
        adapter.to_str().expect("utf-8"),
        "--base",
        dir.path().to_str().expect("utf-8"),
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    assert!(said.contains("merged 14 LoRA modules"), "{said}");
    let got = load(&out, DType::F32)
        .model
        .forward_all(&x, None)
        .expect("forward");
    assert!(max_diff(&want, &got) < 1e-4);
}

#[test]
fn without_avx512_padded_batches_and_training_take_candles_ops() {
    // Two tests again with the AVX-512 kernels switched off: the attention, the adapted
    // projections and the MLP's activation then go through candle's ops and autograd.
    common::rerun_without_avx512(&[
        "a_right_padded_batch_trains_as_its_sequences_alone",
        "adamw_on_the_adapters_lowers_the_loss_and_leaves_the_base_frozen",
    ]);
}
