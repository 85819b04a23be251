//! bioinstruct's side of `scripts/bench-train.sh`: LoRA training steps on SmolLM2-135M.
//!
//! `bench_train ids GGUF SEQ` prints, as a JSON array, SEQ token ids: the bundled seed tasks'
//! text, tokenized and cut. Both engines train on exactly these ids.
//!
//! `bench_train run GGUF IDS_JSON STEPS WARMUP` loads the GGUF dequantized to f32, attaches
//! LoRA (`r = 8`, `lora_alpha = 16`, `lora_dropout = 0.05`, on the projections `TARGETS`
//! names, comma-separated, default `q_proj,v_proj`), and runs
//! WARMUP then STEPS optimizer steps of batch 1 (loss on every next token, as transformers'
//! `labels = input_ids`), with the trainer's own pieces: `batch_nll_sum` (the forward and
//! the loss, the output head fused with it on AVX-512),
//! `backward`, `clip_grad_norm`, AdamW at `lr = 2e-4`. Prints one JSON object: median
//! seconds per step and per forward / backward / optimizer phase, tokens/s, and the peak
//! RSS of the training steps (bytes; the peak is reset after loading, as the Python side does).
//!
//! `BIOINSTRUCT_BENCH_DEVICE` (default `cpu`) names the device: on `cuda:N` the weights and
//! activations are bf16 and every phase ends with a device synchronize, so its time is the
//! GPU's.
#![allow(clippy::unwrap_used)]

use bioinstruct::data::parse_jsonl;
use bioinstruct::model::lora::{Lora, LoraConfig};
use bioinstruct::model::{load_gguf, GgufCompute, LoadOptions};
use bioinstruct::train::data::Example;
use bioinstruct::train::optim::{batch_nll_sum, clip_grad_norm, collate, AdamW, AdamWParams};
use bioinstruct::train::run::peak_rss_bytes;
use std::path::Path;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    bioinstruct::model::pin_thread_count();
    bioinstruct::train::tune_cpu_for_training();
    bioinstruct::model::malloc::keep_freed_buffers();
    let args: Vec<String> = std::env::args().collect();
    let device = std::env::var("BIOINSTRUCT_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into());
    let options = LoadOptions::for_device(&device, GgufCompute::Float)?;
    match args.get(1).map(String::as_str) {
        Some("ids") => {
            let loaded = load_gguf(Path::new(&args[2]), &options)?;
            let seq: usize = args[3].parse()?;
            let seeds = parse_jsonl(Path::new("seeds.jsonl"), bioinstruct::config::BUNDLED_SEEDS);
            let mut ids = Vec::new();
            for r in &seeds.records {
                let text = format!("{}\n{}\n{}\n\n", r.instruction, r.input, r.output);
                ids.extend(loaded.encode(&text)?);
                if ids.len() >= seq {
                    break;
                }
            }
            ids.truncate(seq);
            println!("{}", serde_json::to_string(&ids)?);
        }
        Some("run") => {
            let start_load = Instant::now();
            let mut loaded = load_gguf(Path::new(&args[2]), &options)?;
            let ids: Vec<u32> = serde_json::from_str(&std::fs::read_to_string(&args[3])?)?;
            let (steps, warmup): (usize, usize) = (args[4].parse()?, args[5].parse()?);
            let load_s = start_load.elapsed().as_secs_f64();
            let config = LoraConfig {
                r: 8,
                lora_alpha: 16.0,
                lora_dropout: 0.05,
                target_modules: std::env::var("TARGETS")
                    .unwrap_or_else(|_| "q_proj,v_proj".into())
                    .split(',')
                    .map(String::from)
                    .collect(),
                use_rslora: false,
            };
            let lora = Lora::init(&mut loaded.model, &config, 0)?;
            let vars = lora.vars();
            let mut opt = AdamW::new(
                vars.clone(),
                AdamWParams {
                    lr: 2e-4,
                    weight_decay: 0.0,
                    ..AdamWParams::default()
                },
            )?;
            let mut labels: Vec<i64> = ids[1..].iter().map(|&i| i64::from(i)).collect();
            labels.push(bioinstruct::train::data::IGNORE);
            let example = Example {
                id: "bench".into(),
                input_ids: ids.clone(),
                labels,
                truncated: false,
            };
            let batch = collate(&[&example], 0, loaded.model.device())?;
            // Reset the peak RSS (Linux: "5" to clear_refs), so the figure is the training's.
            let _ = std::fs::write("/proc/self/clear_refs", "5");
            let (mut step_s, mut fwd_s, mut bwd_s, mut opt_s, mut losses) =
                (vec![], vec![], vec![], vec![], vec![]);
            for i in 0..warmup + steps {
                lora.reseed_dropout(i as u64);
                let t0 = Instant::now();
                let loss =
                    (batch_nll_sum(&loaded.model, &batch, true)? / batch.loss_tokens as f64)?;
                let loss_value = loss.to_scalar::<f32>()?;
                let t1 = Instant::now();
                let mut grads = loss.backward()?;
                loaded.model.device().synchronize()?;
                let t2 = Instant::now();
                clip_grad_norm(&mut grads, &vars, 1.0)?;
                opt.step(&grads)?;
                loaded.model.device().synchronize()?;
                let t3 = Instant::now();
                if i >= warmup {
                    step_s.push((t3 - t0).as_secs_f64());
                    fwd_s.push((t1 - t0).as_secs_f64());
                    bwd_s.push((t2 - t1).as_secs_f64());
                    opt_s.push((t3 - t2).as_secs_f64());
                }
                losses.push(loss_value);
            }
            let step = median(step_s);
            println!(
                "{}",
                serde_json::json!({
                    "engine": "bioinstruct (candle)",
                    "device": device,
                    "seq": ids.len(),
                    "load_s": load_s,
                    "step_s": step,
                    "forward_s": median(fwd_s),
                    "backward_s": median(bwd_s),
                    "optimizer_s": median(opt_s),
                    "tokens_per_s": ids.len() as f64 / step,
                    "peak_rss_bytes": peak_rss_bytes(),
                    "losses": losses,
                })
            );
        }
        _ => anyhow::bail!("usage: bench_train ids GGUF SEQ | run GGUF IDS_JSON STEPS WARMUP"),
    }
    Ok(())
}
